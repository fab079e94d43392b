"""The outbox's subcommands of ``manage.py mailrouter``: argument parsing and
output only; the work is in ``worker`` and ``operations``.

- ``outbox-worker [--once] [--batch N] [--concurrency N] [--poll-interval S]``
- ``outbox [--json]``: rows per status and the oldest pending row's age
- ``outbox retry ID [ID ...] | --failed``; ``outbox retry --uncertain ID [ID ...]
  [--no-input]`` (confirmed: may deliver a second copy)
- ``outbox purge --older-than 30d``
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

# Not .worker or .operations here: the models must not load when the outbox
# app is not installed (this module is imported by every ``manage.py mailrouter``).
from ..management.arguments import EXIT_USAGE, parse_duration
from .options import DEFAULT_BATCH, DEFAULT_POLL_INTERVAL

ACTIONS = ("outbox-worker", "outbox")
def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def add_arguments(sub: Any) -> None:
    """Add the outbox subcommands to the command's subparsers."""
    worker = sub.add_parser("outbox-worker", help="deliver outbox rows (poll loop)")
    worker.add_argument("--once", action="store_true",
                        help="deliver the rows due now, then exit")
    worker.add_argument("--batch", type=_positive, default=DEFAULT_BATCH,
                        help=f"rows claimed at a time (default {DEFAULT_BATCH})")
    worker.add_argument("--concurrency", type=_positive, default=1,
                        help="worker threads in this process (default 1)")
    worker.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL,
                        help=f"seconds between polls when idle (default {DEFAULT_POLL_INTERVAL})")
    worker.add_argument("--database", default="default")

    outbox = sub.add_parser("outbox", help="outbox rows per status; retry; purge")
    outbox.add_argument("--json", action="store_true")
    outbox.add_argument("--database", default="default")
    tasks = outbox.add_subparsers(dest="outbox_action", metavar="ACTION")
    retry = tasks.add_parser("retry", help="queue rows for delivery now")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID")
    retry.add_argument("--failed", action="store_true", help="every failed row")
    retry.add_argument("--uncertain", action="store_true",
                       help="queue these uncertain rows again (a mailer may have them: "
                            "this may deliver a second copy); asks to confirm")
    retry.add_argument("--no-input", "--noinput", dest="interactive", action="store_false",
                       help="with --uncertain: do not ask to confirm")
    purge = tasks.add_parser("purge", help="delete rows that ended long ago")
    purge.add_argument("--older-than", required=True, metavar="DURATION")


def handle(command: BaseCommand, options: dict[str, Any]) -> None:
    if not apps.is_installed("mailrouter.outbox"):
        raise CommandError(
            f"{options['action']}: add 'mailrouter.outbox' to INSTALLED_APPS first",
            returncode=EXIT_USAGE,
        )
    if options["action"] == "outbox-worker":
        _worker(command, options)
    elif options.get("outbox_action") == "retry":
        _retry(command, options)
    elif options.get("outbox_action") == "purge":
        _purge(command, options)
    else:
        _summary(command, options)


def _worker(command: BaseCommand, options: dict[str, Any]) -> None:
    from .worker import run_workers

    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stats = run_workers(
            options["concurrency"], options["database"], stop=stop, once=options["once"],
            batch=options["batch"], poll_interval=options["poll_interval"],
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    done = ", ".join(f"{status} {count}" for status, count in sorted(stats.rows.items()))
    command.stdout.write(f"outbox worker stopped: {done or 'no rows'}")


def _summary(command: BaseCommand, options: dict[str, Any]) -> None:
    from . import operations

    result = operations.summary(options["database"])
    if options["json"]:
        command.stdout.write(json.dumps(result.as_dict(), indent=2))
        return
    for status, count in result.counts.items():
        command.stdout.write(f"{status:<10} {count}")
    age = result.oldest_pending_age
    command.stdout.write(
        "oldest queued: " + ("none" if age is None else f"{age:.0f}s ago")
    )


def _retry(command: BaseCommand, options: dict[str, Any]) -> None:
    from . import operations

    if bool(options["ids"]) == bool(options["failed"]):
        raise CommandError("outbox retry: give row IDs or --failed (not both)",
                           returncode=EXIT_USAGE)
    if options["uncertain"]:
        _retry_uncertain(command, options)
        return
    result = operations.retry(options["database"], ids=options["ids"], failed=options["failed"])
    command.stdout.write(f"queued {result.queued} row(s) for delivery now")
    if result.uncertain:
        listed = " ".join(map(str, result.uncertain))
        command.stdout.write(
            f"left {len(result.uncertain)} uncertain row(s) alone: {listed} ("
            f"{operations.UNCERTAIN_WARNING}; to queue them anyway: "
            f"outbox retry --uncertain {listed})"
        )


def _retry_uncertain(command: BaseCommand, options: dict[str, Any]) -> None:
    from . import operations

    if options["failed"]:
        raise CommandError("outbox retry: --uncertain takes row IDs, not --failed",
                           returncode=EXIT_USAGE)
    ids = options["ids"]
    if options["interactive"]:
        answer = ""
        with contextlib.suppress(EOFError):
            answer = input(
                f"Queue {len(ids)} uncertain row(s) again? {operations.UNCERTAIN_WARNING}.\n"
                "Type 'yes' to continue: "
            )
        if answer.strip().lower() != "yes":
            command.stdout.write("nothing queued")
            return
    count = operations.retry_uncertain(options["database"], ids=ids)
    command.stdout.write(f"queued {count} uncertain row(s) for delivery now"
                         + (f" ({len(ids) - count} no longer uncertain: left alone)"
                            if count < len(ids) else ""))


def _purge(command: BaseCommand, options: dict[str, Any]) -> None:
    from . import operations

    seconds = parse_duration("--older-than", options["older_than"])
    count = operations.purge(options["database"], older_than=seconds)
    command.stdout.write(f"deleted {count} row(s) that ended more than {seconds:.0f}s ago")
