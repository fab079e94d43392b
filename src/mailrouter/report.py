"""Tell operators what happened: log records and signals, secrets redacted."""

from __future__ import annotations

import logging
from typing import Any

from django.core.mail import EmailMessage
from django.dispatch import Signal

from . import signals
from .health.breaker import State
from .outcomes import Attempt, MessageStatus

logger = logging.getLogger("mailrouter")


def _send(signal: Signal, sender: type, **kwargs: Any) -> None:
    # No receivers at all is the common case, and much cheaper to check than
    # has_listeners() (Django's own Signal.send() takes the same shortcut).
    if not signal.receivers or not signal.has_listeners(sender):
        return
    for receiver, result in signal.send_robust(sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "mailrouter: signal receiver %r raised %s",
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


def attempt_failed(router: Any, message: EmailMessage, attempt: Attempt) -> None:
    logger.warning(
        "mailrouter: attempt via %s: %s%s",
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
            "mailrouter: message sent via %s after %d attempt(s)",
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
        "mailrouter: message %s after %d attempt(s)%s",
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
