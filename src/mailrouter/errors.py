"""Exceptions raised by the router; all derive from ``MailRouterError``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .compat import InvalidMailer
from .outcomes import Attempt, MessageStatus

if TYPE_CHECKING:
    from django.core.mail import EmailMessage


def message_id_of(message: EmailMessage) -> str:
    """The Message-ID the router sent the message with, else its Message-ID
    header, or ``?`` (also for a malformed message)."""
    used = getattr(message, "mailrouter_message_id", None)
    if used:
        return str(used)
    headers = getattr(message, "extra_headers", None)
    if not isinstance(headers, Mapping):
        return "?"
    return next((str(v) for k, v in headers.items() if str(k).lower() == "message-id"), "?")


class MailRouterError(Exception):
    """Base class of every exception django-mailrouter raises:
    ``except mailrouter.MailRouterError`` catches them all."""


class ConfigurationError(MailRouterError, InvalidMailer):
    """The router's settings are invalid.

    On Django 6.1+ this is an ``InvalidMailer`` (so also ``ImproperlyConfigured``),
    like the errors of Django's own backends. The text always names where the
    problem is (mailer alias, route, option key).
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        text = (
            self.problems[0]
            if len(self.problems) == 1
            else "\n".join(
                [
                    f"{len(self.problems)} configuration problems:",
                    *(f"- {p}" for p in self.problems),
                ]
            )
        )
        # Django's InvalidMailer takes an alias keyword; our texts already name it.
        super().__init__(text)


@dataclass(frozen=True)
class FailedMessage:
    """A message that ended without a mailer accepting it."""

    message: EmailMessage
    status: MessageStatus
    attempts: tuple[Attempt, ...]
    #: Why no attempt could be made (no route, unknown pinned alias), if so.
    reason: str | None = None

    def describe(self) -> str:
        message = self.message
        # A message that failed for being malformed must still be described.
        message_id = message_id_of(message)
        try:
            count = len(message.recipients())
            recipients = f"{count} recipient{'s' if count != 1 else ''}"
        except Exception:
            recipients = "recipients unknown"
        text = (
            f"{message_id} {str(getattr(message, 'subject', ''))[:60]!r} "
            f"({recipients}): {self.status.value}"
        )
        if self.reason:
            text += f" ({self.reason})"
        if self.attempts:
            text += "; attempts: " + "; ".join(a.describe() for a in self.attempts)
        return text


class DeliveryError(MailRouterError):
    """Raised by ``send_messages()`` after the whole batch was processed when one
    or more messages ended without a mailer (unless ``fail_silently``).

    ``failures`` lists every such message with all its attempts; ``sent`` is the
    number of messages of the batch that were accepted.
    """

    def __init__(self, failures: Sequence[FailedMessage], sent: int) -> None:
        self.failures = tuple(failures)
        self.sent = sent
        lines = [
            f"{len(self.failures)} message{'s' if len(self.failures) != 1 else ''} "
            f"not sent ({sent} sent):"
        ]
        lines.extend(f"- {failure.describe()}" for failure in self.failures)
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[type[DeliveryError], tuple[tuple[FailedMessage, ...], int]]:
        # Task queues pickle exceptions; rebuild from the data, not the text.
        return (type(self), (self.failures, self.sent))


class InvalidMessageError(DeliveryError, ValueError):
    """A message of the batch is invalid as written: Django raised ``ValueError``
    for it before anything was sent (an invalid address, a newline in a
    header), as Django's own backends do even with ``fail_silently``.

    Raised after the whole batch was processed, also with ``fail_silently``
    (then naming only such messages); ``except ValueError`` catches it, as it
    catches Django's error, which is its ``__cause__``.
    """


class SendAborted(MailRouterError):
    """A message's last check before its bytes leave refused the send
    (``mailrouter.send_guard``): nothing of it reached the mailer.

    Raised out of ``send_messages()`` (no further candidate is tried): the
    caller that installed the check withdrew the message, e.g. an outbox worker
    whose claim on the row ended.
    """
