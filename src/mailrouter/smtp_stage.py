"""Know how far an SMTP conversation got when it failed.

smtplib raises the same exceptions (disconnect, timeout) whether the server
went away before or after it received the message body, but the two mean
opposite things: before, nothing was sent; after, the server may have the
message. smtplib's ``data()`` transmits the whole body, terminated by
``CRLF.CRLF``, in one ``send()`` call; watching that call tells the stage.
"""

from __future__ import annotations

import smtplib
from typing import Any

from .classify import Stage

_BODY_TERMINATOR = b"\r\n.\r\n"
_ATTRIBUTE = "_mailrouter_stage"


class SMTPStage:
    """Mutable marker attached to one smtplib connection: how far the current
    message got, and which of its recipients the server refused although it
    accepted the message (Django's SMTP backend drops that information)."""

    __slots__ = ("refused", "stage")

    def __init__(self) -> None:
        self.stage = Stage.ENVELOPE
        self.refused: dict[str, tuple[int, bytes]] = {}


def watch(connection: Any) -> SMTPStage | None:
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
