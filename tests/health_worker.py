"""One "web worker" process for the multi-process health test and benchmark.

Usage: ``python -m tests.health_worker CONFIG_JSON``. CONFIG_JSON holds:

- ``id``: worker number; ``log``: path of the JSON-lines log to write;
- ``stop``: path of a file whose existence ends the loop;
- ``count``: stop after this many messages (optional);
- ``interval``: seconds to wait between two messages;
- ``primary_port`` / ``backup_port``: local SMTP servers; ``timeout``: SMTP timeout;
- ``health``: the router's ``health`` option (JSON) or false;
- ``redis``: Redis URL for the health cache, or null (per-process state);
- ``status_pages``: the router's ``status_pages`` option (optional).

Each message is sent on its own, as ``send_mail()`` does in a web request,
through the router configured the legacy way (works on every Django version).
One log line per message: start/end time, status, attempts; one line per
``mailer_state_changed`` / ``mailer_status_changed`` signal this process sent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def configure(config: dict[str, Any]) -> None:
    from django.conf import settings

    locmem = "django.core.cache.backends.locmem.LocMemCache"
    caches: dict[str, Any] = {"default": {"BACKEND": locmem}}
    health = config["health"]
    if config.get("redis"):
        caches["health"] = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": config["redis"],
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
        health = {**health, "cache": "health"}
    smtp = {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"}
    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=["mailrouter"],
        CACHES=caches,
        EMAIL_BACKEND="mailrouter.backend.RouterBackend",
        DEFAULT_FROM_EMAIL="app@example.com",
        MAILROUTER={
            "MAILERS": {
                "primary": {**smtp, "OPTIONS": {"host": "127.0.0.1", "port": config["primary_port"],
                                                "timeout": config["timeout"]}},
                "backup": {**smtp, "OPTIONS": {"host": "127.0.0.1", "port": config["backup_port"],
                                               "timeout": config["timeout"]}},
            },
            "OPTIONS": {"routes": [{"mailers": ["primary", "backup"]}], "health": health,
                        **({"status_pages": config["status_pages"]}
                           if config.get("status_pages") else {})},
        },
        LOGGING_CONFIG=None,
    )
    import django

    django.setup()


def main() -> None:
    config = json.loads(sys.argv[1])
    configure(config)

    import logging

    from django.core.mail import EmailMessage, get_connection

    from mailrouter import signals

    # Skipped attempts are logged per message; this process reports through its log file.
    logging.getLogger("mailrouter").setLevel(logging.CRITICAL)
    log = open(config["log"], "a", buffering=1)  # noqa: SIM115  (lives as long as the process)
    worker = config["id"]

    def on_state(sender: Any, alias: str, old: Any, new: Any, reason: str, **_: Any) -> None:
        log.write(json.dumps({"w": worker, "event": "state", "t": time.time(), "alias": alias,
                              "old": str(old), "new": str(new)}) + "\n")

    signals.mailer_state_changed.connect(on_state)

    def on_status(sender: Any, alias: str, old: Any, new: Any, reason: str, **_: Any) -> None:
        log.write(json.dumps({"w": worker, "event": "status", "t": time.time(), "alias": alias,
                              "old": str(old), "new": str(new)}) + "\n")

    signals.mailer_status_changed.connect(on_status)
    count = config.get("count")
    sent = 0
    while not os.path.exists(config["stop"]) and (count is None or sent < count):
        message = EmailMessage(f"w{worker} m{sent}", "body", None, ["user@example.com"])
        started = time.time()
        connection = get_connection(fail_silently=True)
        connection.send_messages([message])
        log.write(json.dumps({
            "w": worker, "event": "send", "t": started, "end": time.time(),
            "status": str(message.mailrouter_status),  # type: ignore[attr-defined]
            "mid": message.extra_headers.get("Message-ID"),
            "attempts": [[a.alias, a.outcome.value, a.duration]
                         for a in message.mailrouter_attempts],  # type: ignore[attr-defined]
        }) + "\n")
        sent += 1
        time.sleep(config["interval"])
    log.close()


if __name__ == "__main__":
    main()
