"""What happened to a message: one record per attempt, one status per message.

These are plain immutable values so they can be stored on the message, sent in
signals and logged without any risk of a later attempt changing them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.StrEnum):
    """The kind of one attempt's result, decided by what happened and when.

    The kind, not the exception type, decides whether the router fails over and
    whether the attempt counts against the mailer's health.
    """

    #: The mailer accepted the message.
    ACCEPTED = "accepted"
    #: Nothing reached the mailer (connect/auth failure, 4xx, HTTP 5xx/429/401/403).
    #: Fail over; counts against the mailer's health.
    NOT_SENT = "not_sent"
    #: The message itself is unacceptable (all recipients refused, invalid
    #: address, HTTP 400/422). Every mailer would refuse it: do not fail over.
    REJECTED = "rejected"
    #: This mailer cannot express the message (unsupported feature,
    #: serialization error). Try the next mailer; not a health problem.
    INCOMPATIBLE = "incompatible"
    #: The mailer may have accepted the message (connection lost after the
    #: body was sent, HTTP read timeout). Not resent unless the router is
    #: configured for at-least-once delivery.
    UNCERTAIN = "uncertain"
    #: The router did not try this mailer (e.g. its circuit breaker is open).
    SKIPPED = "skipped"

    @property
    def counts_against_health(self) -> bool:
        """Whether this outcome is evidence that the mailer is unhealthy."""
        return self in (Outcome.NOT_SENT, Outcome.UNCERTAIN)


class MessageStatus(enum.StrEnum):
    """How a message ended after all its attempts; exactly one per message."""

    SENT = "sent"
    REJECTED = "rejected"
    #: Every candidate was tried (or skipped) and none took the message.
    FAILED = "failed"
    #: A mailer may have the message and none is known to have accepted it
    #: (at-least-once delivery may have tried others after it, in vain).
    UNCERTAIN = "uncertain"
    #: The message had no recipient: nothing to send, not counted, no error
    #: (as with Django's own backends).
    NO_RECIPIENTS = "no_recipients"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one message at one mailer.

    ``error`` is already redacted: it never contains configured secrets. On an
    accepted attempt it is None, or notes recipients the mailer refused while
    accepting the message for the others.
    ``duration`` is in seconds (wall clock, monotonic). ``message_id`` is the
    Message-ID the message carried (the same in every attempt of one send).
    ``via`` is set when ``alias`` is a nested router: the mailers inside it the
    message went through, down to the leaf that accepted it (``leaf``).
    ``last_resort`` is set when the mailer was out of rotation (drained,
    circuit open, status page down) and tried only because no mailer in
    rotation could take the message: why it was out of rotation.
    """

    alias: str
    outcome: Outcome
    error: str | None = None
    error_type: str | None = None
    duration: float = 0.0
    message_id: str | None = None
    via: tuple[str, ...] = ()
    last_resort: str | None = None
    #: The exception the mailer raised (in this process only: not compared,
    #: not pickled), chained as the ``__cause__`` of the ``DeliveryError``.
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    def __reduce__(self) -> tuple[type[Attempt], tuple[Any, ...]]:
        # Task queues pickle attempts (inside a DeliveryError); the exception
        # may not pickle, and its text is already in ``error``.
        return (type(self), (self.alias, self.outcome, self.error, self.error_type,
                             self.duration, self.message_id, self.via, self.last_resort))

    @property
    def is_callers_error(self) -> bool:
        """Django's own signal of a bug in the message, raised before anything
        was sent (an invalid address, a newline in a header): a ValueError
        judged "rejected" (every mailer would refuse it)."""
        return self.outcome is Outcome.REJECTED and isinstance(self.exception, ValueError)

    @property
    def leaf(self) -> str:
        """The leaf mailer this attempt reached (``alias`` unless nested)."""
        return self.via[-1] if self.via else self.alias

    def describe(self) -> str:
        """One line for logs and error messages."""
        path = "".join(f" → {alias}" for alias in self.via)
        text = f"{self.alias}{path}: {self.outcome.value} ({self.duration * 1000:.1f} ms)"
        if self.error_type:
            text += f" {self.error_type}"
        if self.error:
            text += f": {self.error}"
        if self.last_resort:
            text += f" [last resort, despite: {self.last_resort}]"
        return text


def status_from_attempts(attempts: list[Attempt]) -> MessageStatus:
    """The status a message ends with, given its attempts in order."""
    if not attempts:
        return MessageStatus.FAILED
    last = attempts[-1].outcome
    if last is Outcome.ACCEPTED:
        return MessageStatus.SENT
    # Checked before the last outcome: under at-least-once delivery a later
    # mailer's rejection does not undo an earlier mailer's "may have it".
    if any(attempt.outcome is Outcome.UNCERTAIN for attempt in attempts):
        return MessageStatus.UNCERTAIN
    if last is Outcome.REJECTED:
        return MessageStatus.REJECTED
    return MessageStatus.FAILED
