"""The test messages and the one-line views of what happened to them."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage

from mailrouter.errors import DeliveryError

_INIT_KEYWORDS = frozenset(inspect.signature(EmailMessage).parameters)


def msg(
    subject: str = "Hello",
    to: str | Sequence[str] = ("user@example.com",),
    *,
    body: str = "Body",
    from_email: str = "app@example.com",
    **keywords: Any,
) -> EmailMessage:
    """A plain message. ``EmailMessage`` keywords (``cc``, ``headers``, ...) are
    passed on; any other keyword becomes an attribute, as Anymail and the router
    read them (``tags``, ``metadata``, ``mailers``, ...)."""
    recipients = [to] if isinstance(to, str) else list(to)
    init = {key: value for key, value in keywords.items() if key in _INIT_KEYWORDS}
    message = EmailMessage(subject, body, from_email, recipients, **init)
    for key, value in keywords.items():
        if key not in init:
            setattr(message, key, value)
    return message


def kinds(message: EmailMessage) -> list[tuple[str, str]]:
    """``[(alias, outcome), ...]`` of the message's attempts, in order."""
    return [(a.alias, a.outcome.value) for a in message.mailrouter_attempts]  # type: ignore[attr-defined]


def send(router: Any, *messages: EmailMessage) -> DeliveryError | None:
    """Send ``messages`` through ``router``; the ``DeliveryError`` it raised, if any."""
    try:
        router.send_messages(list(messages))
    except DeliveryError as error:
        return error
    return None


def send_first_to_rest_pinned(
    router: Any, batch: list[EmailMessage], pinned: str, on_sent: Any
) -> None:
    """Send ``batch`` with every message but the first pinned to ``pinned``,
    ``on_sent`` connected to ``message_sent`` meanwhile (called after each
    message: it sees the batch half-way)."""
    from mailrouter import signals

    for message in batch[1:]:
        message.mailers = [pinned]  # type: ignore[attr-defined]
    signals.message_sent.connect(on_sent, weak=False)
    try:
        router.send_messages(batch)
    finally:
        signals.message_sent.disconnect(on_sent)
