"""A shop's settings: EU mail through an EU relay, the rest through a primary
relay with a backup. The relays do not exist: under test, nothing may reach them."""

import django

SECRET_KEY = "user-project-tests-only"
DEBUG = False
INSTALLED_APPS = ["mailrouter", "shop"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
DEFAULT_FROM_EMAIL = "shop@example.com"
SILENCED_SYSTEM_CHECKS = ["mailrouter.W103"]

SMTP = "django.core.mail.backends.smtp.EmailBackend"
# Port 9 (discard) on localhost: a real send would fail, never succeed.
RELAY = {"host": "127.0.0.1", "port": 9, "timeout": 1}
LEAVES = {
    alias: {"BACKEND": SMTP, "OPTIONS": RELAY}
    for alias in ("eu_smtp", "eu_backup", "primary", "backup")
}
ROUTER_OPTIONS = {
    "routes": [
        {"name": "eu", "when": {"to_domain": ["*.de", "*.fr"]},
         "mailers": ["eu_smtp", "eu_backup"]},
        {"name": "default", "mailers": ["primary", "backup"]},
    ],
    "health": {"failure_threshold": 2, "failure_rate": None, "cooldown": 60},
}

if django.VERSION >= (6, 1):
    MAILERS = {
        "default": {"BACKEND": "mailrouter.backend.RouterBackend", "OPTIONS": ROUTER_OPTIONS},
        **LEAVES,
    }
else:
    EMAIL_BACKEND = "mailrouter.backend.RouterBackend"
    MAILROUTER = {"MAILERS": LEAVES, "OPTIONS": ROUTER_OPTIONS}
