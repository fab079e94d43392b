"""One process of the multi-process rate-limit test.

Usage: ``python -m tests.ratelimit_worker CONFIG_JSON``; CONFIG_JSON holds
``redis`` (URL), ``rate_limits``, ``messages``, ``batch``, ``concurrency`` and
``start`` (a path: the worker waits until it exists, so every process starts
sending at once); optionally ``pause`` (seconds between batches), and for
the primary mailer ``record`` (a file it appends the time of each message
to) and ``stall_after`` with ``stalled`` (after that many messages it
creates the ``stalled`` file and hangs, to be killed). Prints one JSON line:
messages per ``sent_using`` alias and per status.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from typing import Any

from django.core.mail.backends.locmem import EmailBackend as LocmemBackend


class PrimaryBackend(LocmemBackend):
    """The primary mailer: locmem, recording when each message went, and
    hanging after ``stall_after`` messages (this process)."""

    sent = 0

    def __init__(
        self,
        *args: Any,
        record: str | None = None,
        stall_after: int | None = None,
        stalled: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.record, self.stall_after, self.stalled = record, stall_after, stalled

    def send_messages(self, messages: Any) -> int:
        if self.stall_after is not None and PrimaryBackend.sent >= self.stall_after:
            assert self.stalled is not None
            open(self.stalled, "w").close()
            time.sleep(3600)
        count = super().send_messages(messages)
        PrimaryBackend.sent += count
        if self.record is not None:
            with open(self.record, "a") as file:  # one short line: appended whole
                file.write(f"{time.time()!r}\n")
        return count


def main(config: dict[str, Any]) -> None:
    from django.conf import settings

    locmem = "django.core.mail.backends.locmem.EmailBackend"
    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=["mailrouter"],
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "health": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": config["redis"],
                "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
            },
        },
        EMAIL_BACKEND="mailrouter.backend.RouterBackend",
        MAILROUTER={
            "MAILERS": {
                "primary": {"BACKEND": "tests.ratelimit_worker.PrimaryBackend", "OPTIONS": {
                    key: config[key] for key in ("record", "stall_after", "stalled")
                    if key in config
                }},
                "backup": {"BACKEND": locmem},
            },
            "OPTIONS": {
                "routes": [{"mailers": ["primary", "backup"]}],
                "health": {"cache": "health"},
                "rate_limits": config["rate_limits"],
                "max_wait": 0,
                "concurrency": config["concurrency"],
            },
        },
    )
    import django

    django.setup()
    from django.core.mail import EmailMessage, get_connection

    while not os.path.exists(config["start"]):
        time.sleep(0.005)
    counts: Counter[str] = Counter()
    sent = 0
    while sent < config["messages"]:
        size = min(config["batch"], config["messages"] - sent)
        batch = [
            EmailMessage(f"m{sent + i}", "body", "app@example.com", [f"u{i}@example.com"])
            for i in range(size)
        ]
        get_connection().send_messages(batch)
        for message in batch:
            counts[str(message.sent_using)] += 1  # type: ignore[attr-defined]
        sent += size
        time.sleep(config.get("pause", 0))
    print(json.dumps(counts))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
