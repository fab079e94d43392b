"""SMTP leaves (Django's SMTP backend, or any backend holding an
``smtplib.SMTP`` connection).

smtplib raises the same exceptions (disconnect, timeout) whether the server
went away before or after it received the message body, but the two mean
opposite things: before, nothing was sent; after, the server may have the
message. smtplib's ``data()`` transmits the whole body, terminated by
``CRLF.CRLF``, in one ``send()`` call; watching that call tells the stage.
"""

from __future__ import annotations

import smtplib
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend

from ..compat import BASE_BACKEND_GETATTR
from ..outcomes import Outcome
from .base import (
    AUTHENTICATED,
    OPENED,
    REACHABLE,
    PlainKind,
    Stage,
    Verdict,
    Watch,
    by_stage,
)

_BODY_TERMINATOR = b"\r\n.\r\n"
_ATTRIBUTE = "_mailrouter_stage"

#: The smtplib methods watched on a connection (checked against the installed
#: Python by tests/test_leaf_kinds.py).
WATCHED_METHODS = ("send", "sendmail")


class SMTPStage:
    """Mutable marker attached to one smtplib connection: how far the current
    message got, and which of its recipients the server refused although it
    accepted the message (Django's SMTP backend drops that information)."""

    __slots__ = ("refused", "stage")

    def __init__(self) -> None:
        self.stage = Stage.ENVELOPE
        self.refused: dict[str, tuple[int, bytes]] = {}


def watch_connection(connection: Any) -> SMTPStage | None:
    """Attach (once) a stage marker to an smtplib connection and reset it.

    Returns None for anything that is not an smtplib.SMTP connection.
    """
    if not isinstance(connection, smtplib.SMTP):
        return None
    marker: SMTPStage | None = connection.__dict__.get(_ATTRIBUTE)
    if marker is None:
        marker = SMTPStage()
        original_send = connection.send

        def send(data: Any) -> None:
            original_send(data)
            if isinstance(data, (bytes, bytearray)) and data.endswith(_BODY_TERMINATOR):
                marker.stage = Stage.BODY_SENT

        original_sendmail = connection.sendmail

        def sendmail(*args: Any, **kwargs: Any) -> Any:
            refused = original_sendmail(*args, **kwargs)
            marker.refused = dict(refused) if refused else {}
            return refused

        connection.send = send  # type: ignore[method-assign,assignment]
        connection.sendmail = sendmail  # type: ignore[method-assign]
        connection.__dict__[_ATTRIBUTE] = marker
    marker.stage = Stage.ENVELOPE
    if marker.refused:
        marker.refused = {}
    return marker


def describe_refused(refused: dict[str, tuple[int, bytes]]) -> str:
    """``"refused recipients: a@x (550 no such user)"`` for an accepted message."""
    parts = []
    for address, (code, reply) in refused.items():
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        parts.append(f"{address} ({code} {text})")
    return "accepted, but refused recipients: " + ", ".join(parts)


#: Per leaf class: can ``connection`` only ever be a plain instance attribute?
_PLAIN_CLASSES: dict[type, bool] = {}


def leaf_connection(backend: Any) -> Any:
    """``getattr(backend, "connection", None)``, without a failing attribute
    lookup on every message for the many backends that have no connection
    (locmem, console, Anymail's, ...)."""
    cls: Any = type(backend)
    plain = _PLAIN_CLASSES.get(cls)
    if plain is None:
        # No custom attribute lookup, and no class attribute or property
        # named ``connection``: then only the instance dict can hold one.
        # (Django 6.1's BaseEmailBackend.__getattr__ never provides it; it
        # only raises AttributeError, which is costly.)
        plain = _PLAIN_CLASSES[cls] = (
            cls.__getattribute__ is object.__getattribute__
            and getattr(cls, "__getattr__", None) in (None, BASE_BACKEND_GETATTR)
            and not any("connection" in vars(klass) for klass in cls.__mro__)
        )
    if not plain:
        return getattr(backend, "connection", None)
    try:
        return backend.__dict__.get("connection")
    except AttributeError:  # no __dict__ (slots): then no connection either
        return None


def _smtp_code_outcome(code: int, *, permanent: Outcome) -> Outcome:
    if 500 <= code < 600:
        return permanent
    return Outcome.NOT_SENT


def _too_large(error: smtplib.SMTPResponseException) -> bool:
    """552 to MAIL FROM or to the body, or enhanced status 5.3.4 (RFC 3463:
    message too big for system): this mailer's size limit, not the message's
    fault; another mailer may take it, and the mailer is healthy."""
    text = error.smtp_error.decode(errors="replace") if isinstance(
        error.smtp_error, bytes
    ) else str(error.smtp_error)
    return error.smtp_code == 552 or text.lstrip().startswith("5.3.4")


def classify_smtp(error: smtplib.SMTPException, stage: Stage) -> Outcome | None:
    """SMTP errors by reply code; None for one without a code (a dropped
    connection: the stage decides)."""
    if isinstance(error, (smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) and _too_large(
        error
    ):
        return Outcome.INCOMPATIBLE
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        if codes and all(500 <= code < 600 for code in codes):
            return Outcome.REJECTED
        return Outcome.NOT_SENT
    if isinstance(error, smtplib.SMTPSenderRefused):
        # A relay refusing the envelope sender is relay policy (unverified
        # domain, quota); another mailer may accept the same sender.
        return Outcome.NOT_SENT
    if isinstance(error, smtplib.SMTPDataError):
        return _smtp_code_outcome(error.smtp_code, permanent=Outcome.REJECTED)
    if isinstance(
        error,
        (
            smtplib.SMTPAuthenticationError,
            smtplib.SMTPHeloError,
            smtplib.SMTPConnectError,
            smtplib.SMTPNotSupportedError,
        ),
    ):
        return Outcome.NOT_SENT
    if isinstance(error, smtplib.SMTPResponseException):
        if stage is Stage.BODY_SENT:
            return _smtp_code_outcome(error.smtp_code, permanent=Outcome.REJECTED)
        return Outcome.NOT_SENT
    return None


class SMTPKind(PlainKind):
    name = "smtp"
    family = "plain"

    def recognises(self, backend: Any) -> bool:
        return isinstance(backend, DjangoSMTPBackend) or isinstance(
            leaf_connection(backend), smtplib.SMTP
        )

    def watch(self, backend: Any) -> Watch | None:
        connection = leaf_connection(backend)
        return None if connection is None else watch_connection(connection)

    def accepted(self, message: EmailMessage, marker: Watch) -> Verdict | None:
        refused = getattr(marker, "refused", None)
        if refused:
            return Verdict(Outcome.ACCEPTED, describe_refused(refused))
        return None

    def reply_outcome(self, error: BaseException, stage: Stage) -> Outcome | None:
        if not isinstance(error, smtplib.SMTPException):
            return None
        # SMTPServerDisconnected and anything else without a reply code.
        return classify_smtp(error, stage) or by_stage(stage)

    def probe(self, backend: Any, timeout: float | None) -> tuple[str, str]:
        if getattr(backend, "connection", None) is None:
            return OPENED, ""
        if getattr(backend, "username", None):
            return AUTHENTICATED, "SMTP server accepted the login"
        return REACHABLE, "SMTP server greeted us (no login configured)"


SMTP = SMTPKind()
