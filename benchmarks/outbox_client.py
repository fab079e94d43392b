"""A child process of benchmarks/outbox.py: times ``send_mail()`` calls.

Configured by ``tests.outbox_process_settings`` (``MAILROUTER_OUTBOX_TEST``).
``argv[1]`` is the recipients' domain (``shop.esp.test`` goes to the fake
ESP, anything else to SMTP). Reads ``N`` lines on stdin; for each, sends N
messages (one ``send_mail()`` per message, autocommit: each outbox row is its
own INSERT and commit, as in a web request) and prints the per-call seconds
as one JSON line.
"""

from __future__ import annotations

import itertools
import json
import sys
import time

import django

django.setup()

from django.core import mail  # noqa: E402
from django.core.management import call_command  # noqa: E402


def main() -> None:
    call_command("migrate", verbosity=0)
    domain = sys.argv[1]
    counter = itertools.count()
    for line in sys.stdin:
        durations = []
        for _ in range(int(line)):
            n = next(counter)
            started = time.perf_counter()
            mail.send_mail(f"order {n}", "Thank you for your order.", "shop@example.com",
                           [f"user{n}@{domain}"])
            durations.append(time.perf_counter() - started)
        print(json.dumps(durations), flush=True)


if __name__ == "__main__":
    main()
