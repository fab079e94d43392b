"""Tell operators what happened: log records and signals, secrets redacted."""

from __future__ import annotations

import logging
import re
from typing import Any

from django.core.mail import EmailMessage
from django.dispatch import Signal

from . import signals
from .classify import error_chain
from .errors import message_id_of
from .health.breaker import State
from .outcomes import Attempt, MessageStatus

logger = logging.getLogger("mailrouter")
_OBJECT_REPR = re.compile(r"^<[^<>]* at 0x[0-9a-f]+>:\s*")


def describe_error(error: BaseException) -> str:
    """One line saying what went wrong, each cause once.

    Anymail's errors append their cause's full text (which for requests
    already nests urllib3's cause) and a pretty-printed response body; this
    keeps Anymail's own text, the root cause and the response, on one line.
    """
    if not callable(getattr(error, "describe_cause", None)):
        return " ".join(str(error).split())
    parts = [" ".join(str(arg) for arg in error.args).strip().rstrip(":")]
    root = list(error_chain(error))[-1]
    cause = error.__cause__
    if cause is not None and cause is not root:
        parts.append(type(cause).__name__)  # e.g. requests' SSLError, by its kind only
    if root is not error:
        parts.append(f"{type(root).__name__}: {_OBJECT_REPR.sub('', str(root))}")
    describe_response = getattr(error, "describe_response", None)
    response = describe_response() if callable(describe_response) else None
    if response:
        parts.append(str(response))
    return " ".join(": ".join(part for part in parts if part).split())


#: How far the cut points of :func:`elide` may move to fall between words.
_WORD_SLACK = 8


def elide(text: str, width: int) -> str:
    """``text`` on one line of at most ``width`` characters.

    A longer text keeps its start (what failed, e.g. "Error posting to …") and
    its end, and loses its middle: error texts end with their innermost cause
    and the server's answer (:func:`describe_error`), the part an operator needs.
    """
    text = " ".join(text.split())
    keep = width - 3  # the " … " between the two parts
    if len(text) <= width or keep < 3:
        return text[:max(width, 0)]
    head_end = keep // 3
    tail_start = len(text) - (keep - head_end)
    space = text.rfind(" ", head_end - _WORD_SLACK, head_end + 1)
    head_end = space if space > 0 else head_end
    space = text.find(" ", tail_start - 1, tail_start + _WORD_SLACK)
    tail_start = space + 1 if space >= 0 else tail_start
    return f"{text[:head_end].rstrip()} … {text[tail_start:].lstrip()}"


def send_signal(signal: Signal, sender: type, **kwargs: Any) -> None:
    """Send ``signal`` to its receivers; a receiver that raises is logged and
    ignored (observers never change what happens to a message)."""
    _send(signal, sender, **kwargs)


def _send(signal: Signal, sender: type, **kwargs: Any) -> None:
    # No receivers at all is the common case, and much cheaper to check than
    # has_listeners() (Django's own Signal.send() takes the same shortcut).
    if not signal.receivers or not signal.has_listeners(sender):
        return
    for receiver, result in signal.send_robust(sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "signal receiver %r raised %s",
                receiver,
                type(result).__name__,
                exc_info=result,
            )


def mailer_state_changed(router: Any, alias: str, old: State, new: State, reason: str) -> None:
    """A mailer's circuit breaker changed state (logged by the health monitor)."""
    _send(
        signals.mailer_state_changed, type(router), router=router,
        alias=alias, old=old, new=new, reason=reason,
    )


def mailer_status_changed(sender: type, alias: str, old: Any, new: Any, reason: str) -> None:
    """A mailer's status page changed state (logged by the refresher that read it)."""
    _send(signals.mailer_status_changed, sender, alias=alias, old=old, new=new, reason=reason)


def attempt_failed(router: Any, message: EmailMessage, attempt: Attempt) -> None:
    logger.warning(
        "attempt via %s: %s%s",
        attempt.alias,
        attempt.outcome.value,
        f" ({attempt.error_type}: {attempt.error})" if attempt.error_type else "",
        extra={"mailrouter_alias": attempt.alias, "mailrouter_outcome": attempt.outcome.value},
    )
    _send(
        signals.attempt_failed,
        type(router),
        router=router,
        alias=attempt.alias,
        message=message,
        outcome=attempt.outcome,
        error=attempt.error,
        attempt=attempt,
    )


def message_sent(router: Any, message: EmailMessage, alias: str, attempts: list[Attempt]) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "message sent via %s after %d attempt(s)",
            alias,
            len(attempts),
            extra={"mailrouter_alias": alias, "mailrouter_outcome": "accepted"},
        )
    _send(
        signals.message_sent,
        type(router),
        router=router,
        alias=alias,
        message=message,
        attempts=attempts,
    )


def message_failed(
    router: Any,
    message: EmailMessage,
    status: MessageStatus,
    attempts: list[Attempt],
    reason: str | None,
) -> None:
    last = attempts[-1] if attempts else None
    logger.error(
        "message %s %s after %d attempt(s)%s",
        message_id_of(message),
        status.value,
        len(attempts),
        f": {reason}" if reason else "",
        extra={
            "mailrouter_alias": last.alias if last else None,
            "mailrouter_outcome": last.outcome.value if last else None,
            "mailrouter_status": status.value,
        },
    )
    _send(
        signals.message_failed,
        type(router),
        router=router,
        message=message,
        attempts=attempts,
        status=status,
        reason=reason,
    )
