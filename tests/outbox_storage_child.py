"""``python -m tests.outbox_storage_child SCENARIO`` under
``tests.outbox_process_settings`` (a real PostgreSQL): what the outbox stores
when a message or a mailer's answer holds what PostgreSQL cannot.

- ``enqueue``: in one transaction, store a message, try messages the outbox
  must refuse, store another; print JSON: per refused message the exception's
  class, whether it is a ``PayloadError`` / ``MailRouterError`` / ``ValueError``,
  and its text; then the rows committed.
- ``deliver``: store one message for the fake ESP and one for SMTP (two
  recipients), then run one ``outbox-worker --once`` pass.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

import django

django.setup()

from anymail.message import AnymailMessage  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core import mail  # noqa: E402
from django.core.mail import EmailMessage  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

from mailrouter.errors import MailRouterError  # noqa: E402
from mailrouter.outbox.models import OutboxMessage  # noqa: E402
from mailrouter.outbox.payload import PayloadError  # noqa: E402


def outbox() -> Any:
    return mail.mailers["default"] if hasattr(settings, "MAILERS") else mail.get_connection()  # type: ignore[attr-defined]


def message(**changes: Any) -> EmailMessage:
    made = EmailMessage("subject", "body", "app@example.com", ["user@example.com"])
    for name, value in changes.items():
        setattr(made, name, value)
    return made


def with_metadata(value: Any) -> EmailMessage:
    made = AnymailMessage("subject", "body", "app@example.com", ["user@example.com"])
    made.metadata = {"score": value}
    return made


#: Messages the outbox must refuse, by name.
REFUSED: dict[str, Callable[[], EmailMessage]] = {
    "nul_body": lambda: message(body="a\x00b"),
    "nul_header": lambda: message(extra_headers={"X-Tag": "a\x00b"}),
    "nan_metadata": lambda: with_metadata(math.nan),
    "surrogate_subject": lambda: message(subject="caf\udce9"),
    "newline_subject": lambda: message(subject="hello\r\nBcc: victim@example.com"),
    "pin_to_outbox": lambda: message(mailers=["default"] if hasattr(settings, "MAILERS") else []),
}


def enqueue() -> dict[str, Any]:
    call_command("migrate", verbosity=0)
    backend = outbox()
    refused: dict[str, Any] = {}
    with transaction.atomic():
        backend.send_messages([message(subject="first")])
        for name, make in REFUSED.items():
            made = make()
            try:
                backend.send_messages([made])
            except Exception as error:
                refused[name] = {
                    "type": type(error).__name__,
                    "payload_error": isinstance(error, PayloadError),
                    "mailrouter_error": isinstance(error, MailRouterError),
                    "value_error": isinstance(error, ValueError),
                    "text": str(error),
                }
            else:
                refused[name] = None
            refused.setdefault("outbox_ids", []).append(getattr(made, "outbox_id", None))
        # The caller's transaction is still usable.
        backend.send_messages([message(subject="last")])
    subjects = sorted(OutboxMessage.objects.values_list("subject", flat=True))
    return {"refused": refused, "subjects": subjects}


def deliver() -> dict[str, Any]:
    call_command("migrate", verbosity=0)
    outbox().send_messages([
        message(subject="to the ESP", to=["user@shop.esp.test"]),
        message(subject="to SMTP", to=["user@example.com", "refused@example.com"]),
    ])
    call_command("mailrouter", "outbox-worker", "--once")
    return {}


if __name__ == "__main__":
    print(json.dumps({"enqueue": enqueue, "deliver": deliver}[sys.argv[1]]()))
