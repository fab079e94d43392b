"""Settings for the outbox's worker and enqueue subprocesses (tests and
benchmarks): PostgreSQL (or SQLite), an OutboxBackend in front of a router
that sends ``*.esp.test`` recipients to a fake Mailgun and the rest to SMTP.
The test passes ports and options as JSON in ``MAILROUTER_OUTBOX_TEST``."""

import json
import os

import django

_config = json.loads(os.environ["MAILROUTER_OUTBOX_TEST"])

SECRET_KEY = "tests-only-not-secret"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "mailrouter", "mailrouter.outbox"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _config["database"],
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": _config["pg_port"],
    }
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
DEFAULT_FROM_EMAIL = "app@example.com"
LOGGING_CONFIG = None

_LEAVES = {
    "smtp": {
        "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "OPTIONS": {"host": "127.0.0.1", "port": _config["smtp_port"], "timeout": 5},
    },
    "mailgun": {
        "BACKEND": "anymail.backends.mailgun.EmailBackend",
        "OPTIONS": {"api_key": "key-outbox-test", "sender_domain": "mg.example.com",
                    "api_url": _config["esp_url"], "timeout": 5},
    },
}
_ROUTER = {
    "routes": [
        {"name": "esp", "when": {"to_domain": ["*.esp.test"]}, "mailers": ["mailgun"]},
        {"name": "default", "mailers": ["smtp"]},
    ],
    "health": False,
}
_OUTBOX = {"lease": _config.get("lease", 300), "retry": {"backoff": 1}}

if _config.get("tasks") == "db":
    # Each commit enqueues deliver_outbox in django-tasks-db's table; a real
    # ``manage.py db_worker`` runs it.
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    _OUTBOX["task_backend"] = "default"

if django.VERSION >= (6, 1):
    MAILERS = {
        "default": {"BACKEND": "mailrouter.outbox.OutboxBackend",
                    "OPTIONS": {"mailer": "router", **_OUTBOX}},
        "router": {"BACKEND": "mailrouter.backend.RouterBackend", "OPTIONS": _ROUTER},
        **_LEAVES,
    }
else:
    EMAIL_BACKEND = "mailrouter.outbox.OutboxBackend"
    MAILROUTER = {"MAILERS": _LEAVES, "OPTIONS": _ROUTER, "OUTBOX": _OUTBOX}
