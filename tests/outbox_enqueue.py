"""``python -m tests.outbox_enqueue COUNT [EVERY]``: migrate, then store COUNT
messages through the configured email backend (batches of 200, one
transaction each); every EVERY-th (default 3; 1 = all) goes to a
``*.esp.test`` recipient (the fake ESP), the rest to SMTP."""

import sys

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core import mail  # noqa: E402
from django.core.mail import EmailMessage  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402


def main(count: int, every: int) -> None:
    call_command("migrate", verbosity=0)
    uses_mailers = hasattr(settings, "MAILERS")
    connection = mail.mailers["default"] if uses_mailers else mail.get_connection()  # type: ignore[attr-defined]
    for start in range(0, count, 200):
        batch = [
            EmailMessage(
                f"message {n}", f"body {n}", "app@example.com",
                [f"user{n}@{'shop.esp.test' if n % every == 0 else 'example.com'}"],
                # Set here, so the same check works for other outboxes too.
                headers={"Message-ID": f"<outbox-{n}@enqueue.test>"},
            )
            for n in range(start, min(count, start + 200))
        ]
        with transaction.atomic():
            connection.send_messages(batch)  # (other outboxes do not all return a count)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3)
