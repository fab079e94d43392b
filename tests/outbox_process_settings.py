"""Settings for the outbox's worker and enqueue subprocesses (tests and
benchmarks/outbox.py): PostgreSQL, an OutboxBackend in front of a router
that sends ``*.esp.test`` recipients to a fake Mailgun and the rest to SMTP.
The caller passes ports and options as JSON in ``MAILROUTER_OUTBOX_TEST``:

- ``front``: ``"outbox"`` (default) or ``"router"`` (send directly, no outbox);
- ``system``: ``"mailrouter"`` (default), or ``"post_office"`` / ``"mailer"``
  (django-post_office or django-mailer in front of the same fake Mailgun, for
  the benchmark's comparison; they must be installed);
- ``tasks``: ``"db"`` to wake django-tasks-db workers on commit;
- ``delivery``: the router's ``delivery`` option.

With ``MAILROUTER_OUTBOX_PAUSE=1`` in its environment, a worker stops itself
(SIGSTOP) in its first Anymail ``pre_send``, just before the request."""

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
if "delivery" in _config:
    _ROUTER["delivery"] = _config["delivery"]
_OUTBOX = {"lease": _config.get("lease", 300), "retry": {"backoff": 1}}

if os.environ.get("MAILROUTER_OUTBOX_PAUSE") == "1":
    # This worker stops itself (SIGSTOP) in its first Anymail pre_send: after
    # its "sending" mark, just before the request. The test resumes or kills it.
    import signal

    from anymail.signals import pre_send

    def _pause_once(sender, message, esp_name, **kwargs):  # type: ignore[no-untyped-def]
        if not _paused:
            _paused.append(True)
            os.kill(os.getpid(), signal.SIGSTOP)

    _paused: list[bool] = []
    pre_send.connect(_pause_once, weak=False)

if _config.get("tasks") == "db":
    # Each commit enqueues deliver_outbox in django-tasks-db's table; a real
    # ``manage.py db_worker`` runs it.
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    _OUTBOX["task_backend"] = "default"

_system = _config.get("system", "mailrouter")
_direct = _config.get("front") == "router"

if _system == "post_office":
    INSTALLED_APPS.append("post_office")
    # post_office renders subjects and bodies as templates.
    TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates"}]
    EMAIL_BACKEND = "post_office.EmailBackend"
    POST_OFFICE = {"BACKENDS": {"default": "anymail.backends.mailgun.EmailBackend"}}
elif _system == "mailer":
    INSTALLED_APPS.append("mailer")
    EMAIL_BACKEND = "mailer.backend.DbBackend"
    MAILER_EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    # Its file lock is never released by a killed process; rows are locked in the database.
    MAILER_USE_FILE_LOCK = False
    MAILER_EMPTY_QUEUE_SLEEP = 0.1
if _system != "mailrouter":
    ANYMAIL = {"MAILGUN_API_KEY": "key-outbox-test", "MAILGUN_SENDER_DOMAIN": "mg.example.com",
               "MAILGUN_API_URL": _config["esp_url"], "REQUESTS_TIMEOUT": 5}
elif django.VERSION >= (6, 1):
    MAILERS = {
        "default": {"BACKEND": "mailrouter.outbox.OutboxBackend",
                    "OPTIONS": {"mailer": "router", **_OUTBOX}},
        "router": {"BACKEND": "mailrouter.backend.RouterBackend", "OPTIONS": _ROUTER},
        **_LEAVES,
    }
    if _direct:
        MAILERS["default"] = MAILERS["router"]
else:
    EMAIL_BACKEND = (
        "mailrouter.backend.RouterBackend" if _direct else "mailrouter.outbox.OutboxBackend"
    )
    MAILROUTER = {"MAILERS": _LEAVES, "OPTIONS": _ROUTER, "OUTBOX": _OUTBOX}
