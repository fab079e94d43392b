"""One "web worker" process of a fleet: the multi-process health test and
``benchmarks/outage.py`` both run it.

Usage: ``python -m tests.health_worker CONFIG_JSON``. CONFIG_JSON holds:

- ``primary_port`` / ``backup_port``: local SMTP servers; ``timeout``: SMTP timeout;
- ``health``: the router's ``health`` option (JSON) or false;
- ``redis``: Redis URL for the health cache, or null (per-process state);
- ``count``: stop after this many messages (optional);
- ``duration``: stop after this many seconds (optional);
- ``stop``: path of a file whose existence ends the loop (optional);
- ``interval``: seconds to wait between two messages (default 0);
- ``go``: path of a file to wait for before sending, after warming up
  (imports, cache connection, parsed config); the worker touches
  ``<go>.ready.<pid>`` once it waits (optional);
- ``id``: worker number; ``log``: path of a JSON-lines log (optional): one line
  per message (start/end time, status, attempts) and one per
  ``mailer_state_changed`` / ``mailer_status_changed`` signal this process sent;
- ``status_pages``: the router's ``status_pages`` option (optional).

Each message is sent on its own, as ``send_mail()`` does in a web request,
through the router configured the legacy way (works on every Django version).
At the end the worker prints one JSON line of figures: messages sent, failed
attempts on the primary, and when each happened.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def configure(config: dict[str, Any]) -> None:
    from django.conf import settings

    from mailrouter.testing.redis import redis_cache_settings
    from mailrouter.testing.settings import mail_settings

    locmem = "django.core.cache.backends.locmem.LocMemCache"
    caches: dict[str, Any] = {"default": {"BACKEND": locmem}}
    health = config["health"]
    if config.get("redis") and health is not False:
        caches["health"] = redis_cache_settings(config["redis"])
        health = {**health, "cache": "health"}
    smtp = "django.core.mail.backends.smtp.EmailBackend"
    mailers = {
        name: {"BACKEND": smtp,
               "OPTIONS": {"host": "127.0.0.1", "port": port, "timeout": config["timeout"]}}
        for name, port in (("primary", config["primary_port"]), ("backup", config["backup_port"]))
    }
    options = {"routes": [{"mailers": ["primary", "backup"]}], "health": health}
    if config.get("status_pages"):
        options["status_pages"] = config["status_pages"]
    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=["mailrouter"],
        CACHES=caches,
        DEFAULT_FROM_EMAIL="app@example.com",
        LOGGING_CONFIG=None,
        **mail_settings(mailers, options, style="legacy"),
    )
    import django

    django.setup()


def main() -> None:
    config = json.loads(sys.argv[1])
    configure(config)

    import logging

    from django.core.cache import caches
    from django.core.mail import EmailMessage, get_connection

    from mailrouter import signals

    # Skipped attempts are logged per message; this process reports through its figures.
    logging.getLogger("mailrouter").setLevel(logging.CRITICAL)
    worker = config.get("id", os.getpid())
    log = open(config["log"], "a", buffering=1) if config.get("log") else None  # noqa: SIM115

    def on_state(sender: Any, alias: str, old: Any, new: Any, reason: str, **_: Any) -> None:
        if log is not None:
            log.write(json.dumps({"w": worker, "event": "state", "t": time.time(), "alias": alias,
                                  "old": str(old), "new": str(new)}) + "\n")

    signals.mailer_state_changed.connect(on_state)

    def on_status(sender: Any, alias: str, old: Any, new: Any, reason: str, **_: Any) -> None:
        if log is not None:
            log.write(json.dumps({"w": worker, "event": "status", "t": time.time(),
                                  "alias": alias, "old": str(old), "new": str(new)}) + "\n")

    signals.mailer_status_changed.connect(on_status)
    # Warm up outside the measurement: imports (redis-py takes ~0.7 s), the
    # cache connection, the router's parsed configuration.
    if "health" in caches:
        caches["health"].get("warm-up")
    get_connection()
    if config.get("go"):
        go = Path(config["go"])
        Path(f"{go}.ready.{os.getpid()}").touch()
        while not go.exists():
            time.sleep(0.002)

    started = time.time()
    until = started + config["duration"] if config.get("duration") else None
    count, stop, interval = config.get("count"), config.get("stop"), config.get("interval", 0)
    # (began, ended) of each failed attempt on the primary; "began" is when its
    # send_messages() call started: the primary is the first candidate.
    paid_at: list[tuple[float, float]] = []
    primary_at: list[float] = []  # when the primary accepted a message
    sent_at: list[tuple[float, str | None]] = []  # (when, sent_using) of every message
    sent = n = 0
    while (
        (count is None or n < count)
        and (until is None or time.time() < until)
        and not (stop and os.path.exists(stop))
    ):
        message = EmailMessage(f"w{worker} m{n}", "body", None, ["user@example.com"])
        began = time.time()
        get_connection(fail_silently=True).send_messages([message])
        now = time.time()
        n += 1
        using = getattr(message, "sent_using", None)
        sent += using is not None
        attempts: list[Any] = message.mailrouter_attempts  # type: ignore[attr-defined]
        if using == "primary":
            primary_at.append(now)
        sent_at.append((now, using))
        paid_at.extend(
            (began, now)
            for a in attempts
            if a.alias == "primary" and a.outcome.value in ("not_sent", "uncertain")
        )
        if log is not None:
            log.write(json.dumps({
                "w": worker, "event": "send", "t": began, "end": now,
                "status": str(message.mailrouter_status),  # type: ignore[attr-defined]
                "mid": message.mailrouter_message_id,
                "attempts": [[a.alias, a.outcome.value, a.duration] for a in attempts],
            }) + "\n")
        if interval:
            time.sleep(interval)
    if log is not None:
        log.close()
    print(json.dumps({
        "started": started, "ended": time.time(), "paid": len(paid_at), "sent": sent, "count": n,
        "paid_at": paid_at, "primary_at": primary_at, "sent_at": sent_at,
    }), flush=True)


if __name__ == "__main__":
    main()
