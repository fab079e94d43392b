"""``OutboxBackend``: stores messages for the outbox workers instead of sending.

The request pays for one INSERT per batch (a bulk insert), inside the
caller's transaction: the messages are committed or rolled back together
with the data that caused them. No mailer is contacted here.

What a direct send would refuse before any I/O is refused here, in the
caller, with the error Django raises (the MIME message is built once): a row
that can only fail later is no use to anyone. Everything is checked before the
INSERT, so a refused message never aborts the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connections, transaction
from django.utils import timezone

from ..compat import BACKENDS_TAKE_ALIAS, check_addresses, drop_ignored_options
from ..config import OUTBOX_CANDIDATE, load_mailer_table, parse_alias_list
from ..delivery import ensure_message_id, restore_caller_headers
from .models import OutboxMessage, RowStatus
from .options import OutboxOptions, cached_options, legacy_raw_options
from .payload import PayloadError, encode
from .storable import payload_size


class OutboxBackend(BaseEmailBackend):
    """Stores each message as one outbox row; workers deliver them later.

    ``send_messages()`` returns the number of rows stored (messages without
    recipients are skipped, as Django's own backends skip them). Each stored
    message gets ``outbox_id`` (the row's primary key) and
    ``mailrouter_message_id``: the Message-ID fixed here, stored in the row's
    payload, that every delivery of the row carries (the caller's
    ``extra_headers`` are left as they were). A message that cannot be
    stored faithfully (an attribute JSON cannot hold, a payload over
    ``max_payload_bytes``) raises ``PayloadError`` before anything of the
    batch is stored, even with ``fail_silently``: it would otherwise be lost.
    """

    #: Routers refuse an outbox as a candidate (see ``mailrouter.config.OUTBOX_MARKER``).
    is_mailrouter_outbox = True

    def __init__(
        self, fail_silently: bool = False, *, alias: str | None = None, **options: Any
    ) -> None:
        drop_ignored_options(options)
        if BACKENDS_TAKE_ALIAS:
            super().__init__(alias=alias)
        else:
            super().__init__()
        self.alias = alias
        self.fail_silently = fail_silently
        if alias is None:
            given = {
                key: value
                for key, value in options.items()
                if not (key in ("username", "password") and value is None)
            }
            options = {**legacy_raw_options(), **given}
        self.options: OutboxOptions = cached_options(alias or "", options)

    def send_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        messages = list(email_messages)
        now = timezone.now()
        database = self.options.database
        # PostgreSQL text and jsonb cannot hold NUL (checked before the INSERT).
        nul = connections[database].vendor != "postgresql"
        rows: list[tuple[EmailMessage, OutboxMessage]] = []
        for index, message in enumerate(messages):
            if not callable(getattr(message, "recipients", None)):
                raise TypeError(
                    f"send_messages() takes EmailMessage objects; item {index} is "
                    f"{type(message).__name__} (nothing was stored)"
                )
            if not message.recipients():
                continue
            rows.append((message, self._row(index, message, now, nul=nul)))
        if not rows:
            return 0
        if len(rows) == 1:
            # send_mail(): one statement; bulk_create would add BEGIN and COMMIT
            # round trips in autocommit mode.
            rows[0][1].save(using=database, force_insert=True)
        else:
            OutboxMessage.objects.using(database).bulk_create([row for _, row in rows])
        for message, row in rows:
            message.outbox_id = row.pk  # type: ignore[attr-defined]
        task_backend = self.options.task_backend
        if task_backend is not None:
            from .tasks import wake_workers

            # After the commit: a task run before it would find no rows.
            transaction.on_commit(lambda: wake_workers(task_backend, database), using=database)
        return len(rows)

    def _row(self, index: int, message: EmailMessage, now: Any, *, nul: bool) -> OutboxMessage:
        caller_headers = ensure_message_id(message)
        where = f"message {index} (subject {str(message.subject)[:60]!r})"
        try:
            payload = encode(message)
            _check_pins(message)
        except PayloadError as error:
            raise PayloadError(f"{where}: {error}; nothing of this batch was stored") from None
        finally:
            if caller_headers is not None:
                restore_caller_headers(message, caller_headers)
        size, problem = payload_size(payload, nul=nul)
        if problem is not None:
            raise PayloadError(f"{where}: {problem}; nothing of this batch was stored")
        # What a direct send raises before any I/O (a newline in a header, an
        # unusable header value, an invalid address), raised as Django raises it.
        check_addresses(message, message.message())
        if size > self.options.max_payload_bytes:
            raise PayloadError(
                f"{where} is {size} bytes as stored; {self.options.label} allows at most "
                f"{self.options.max_payload_bytes} (option 'max_payload_bytes'); nothing of "
                "this batch was stored"
            )
        message_id: str = message.mailrouter_message_id  # type: ignore[attr-defined]
        return OutboxMessage(
            status=RowStatus.QUEUED,
            outbox_alias=self.options.alias,
            mailer=self.options.mailer,
            message_id=message_id[:255],
            subject=str(payload["subject"] or "")[:1000],
            recipients=", ".join(str(address) for address in message.recipients()),
            payload=payload,
            created_at=now,
            next_attempt_at=now,
        )


def _check_pins(message: EmailMessage) -> None:
    """A pin the workers' router could never honour fails now, in the caller:
    a pin to an outbox would store the message again at every delivery."""
    pins = getattr(message, "mailers", None)
    if pins is None:
        return
    aliases = parse_alias_list(pins)
    if aliases is None:
        raise PayloadError(f"mailers must be an alias or a non-empty list of aliases, not {pins!r}")
    table = load_mailer_table()
    for alias in aliases:
        if alias not in table:
            raise PayloadError(f"mailers names {alias!r}, which is not in {table.source}")
        if alias in table.outboxes:
            raise PayloadError(f"mailers names {alias!r}, {OUTBOX_CANDIDATE}")
