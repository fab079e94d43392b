"""Send one message through its candidates in order: the failover loop.

For each candidate: skip it if it already failed at connection level in this
batch, otherwise make one attempt, classify any failure by exception and
stage, undo the attempt's changes to the message, and let the outcome decide
whether the next candidate may be tried.

The last-resort rule, one for drains, open breakers and status pages alike:
a candidate *out of rotation* (drained, circuit open or being probed by
another process, status page down) is skipped while candidates *in rotation*
are tried. It is tried — after them, in route order, its attempt marked
``last_resort`` with the reason — only when no candidate in rotation can
still take the message: each one really failed (not sent, incompatible,
down earlier in this batch) or there was none. A candidate in rotation that
is only out of rate budget can still take it (the message waits for budget,
up to ``max_wait``), so then no out-of-rotation mailer is tried. A rejected
or uncertain outcome ends the message as always.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from email.utils import make_msgid
from typing import Any, Protocol

from django.core.mail import EmailMessage
from django.core.mail.utils import DNS_NAME

from . import esp_answer, send_guard
from .classify import MAY_HAVE_LEFT, Stage, error_chain
from .compat import BASE_BACKEND_GETATTR
from .config import Delivery, RouterConfig, is_router_class
from .errors import SendAborted
from .http_stage import HTTPStage, is_anymail_backend
from .http_stage import watch as watch_http
from .outcomes import Attempt, MessageStatus, Outcome, status_from_attempts
from .pool import MailerPool
from .ratelimit import RATE_LIMITED, RateLimiter, Token
from .report import describe_error
from .routing import Candidate
from .smtp_stage import SMTPStage, describe_refused, watch
from .snapshot import MessageSnapshot

logger = logging.getLogger("mailrouter")
MAX_ERROR_TEXT = 1000


@dataclass
class BatchState:
    """What one ``send_messages()`` call has learnt about its mailers."""

    #: Mailers that failed to connect or timed out: not tried again this batch,
    #: so a dead or hanging mailer costs one failure per batch, not one per message.
    down: dict[Any, str] = field(default_factory=dict)
    #: Whether "trying out-of-rotation mailers as the last resort" was logged.
    last_resort_logged: bool = False


class HealthView(Protocol):
    """Mailer health as the failover loop sees it (see ``mailrouter.health``).

    ``begin_batch`` is called once per ``send_messages()`` with every alias the
    batch may use, so an implementation can read all state in one round trip.
    """

    def begin_batch(self, aliases: Collection[str]) -> None: ...

    def order(self, candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
        """The candidates in the order to try them (a degraded mailer last)."""
        ...

    def skip_reason(self, alias: str) -> str | None:
        """Why not to try this mailer now (open breaker, drained), or None."""
        ...

    def record(self, alias: str, attempt: Attempt) -> None: ...

    def end_batch(self) -> None: ...


class NoHealth:
    """Health tracking switched off: every mailer is always tried."""

    def begin_batch(self, aliases: Collection[str]) -> None:
        pass

    def order(self, candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
        return candidates

    def skip_reason(self, alias: str) -> str | None:
        return None

    def record(self, alias: str, attempt: Attempt) -> None:
        pass

    def end_batch(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    status: MessageStatus
    sent_using: str | None
    attempts: list[Attempt]


_ADDRESS_LISTS = ("to", "cc", "bcc", "reply_to")


def message_problem(message: EmailMessage) -> str | None:
    """Why this message cannot be sent as it is, or None.

    Django's constructor checks these, but attributes set later are not: a
    str in ``to`` would be sent to each of its characters.
    """
    for name in _ADDRESS_LISTS:
        value = getattr(message, name, None)
        if not isinstance(value, (list, tuple)):
            kind = type(value).__name__
            return f"message.{name} must be a list or tuple of addresses, not {kind}"
    if not isinstance(message.extra_headers, Mapping):
        kind = type(message.extra_headers).__name__
        return f"message.extra_headers must be a mapping, not {kind}"
    return None


def ensure_message_id(message: EmailMessage) -> Mapping[str, Any] | None:
    """Fix the Message-ID every attempt of this send will carry.

    A Message-ID the caller set in ``extra_headers`` is kept (an application
    that wants one ID across its own retries sets it). Otherwise a new one is
    made for this send (Django makes a new one for every ``message()``: the
    same object sent twice on purpose is two messages, and a receiving server
    may discard a second message with the first one's ID). It goes into a new
    headers dict installed for the send; the caller's own dict is never
    changed. Returns that dict of the caller's, for ``restore_caller_headers``
    after the send, or None when the caller's Message-ID is used.
    ``message.mailrouter_message_id`` says which ID the send used.
    """
    headers = message.extra_headers
    for name, value in headers.items():
        if name.lower() == "message-id":
            message.mailrouter_message_id = str(value)  # type: ignore[attr-defined]
            return None
    message_id = make_msgid(domain=DNS_NAME.get_fqdn())
    message.extra_headers = {**headers, "Message-ID": message_id}
    message.mailrouter_message_id = message_id  # type: ignore[attr-defined]
    return headers


def restore_caller_headers(message: EmailMessage, caller_headers: Mapping[str, Any]) -> None:
    """Take the generated Message-ID out of ``extra_headers`` after the send:
    the caller's own dict comes back, unless a leaf that accepted the message
    changed the headers (then its changes stay, without the ID)."""
    message_id = getattr(message, "mailrouter_message_id", None)
    current = message.extra_headers
    if not isinstance(current, Mapping):
        return
    rest = {
        name: value for name, value in current.items()
        if not (name == "Message-ID" and value == message_id)
    }
    restored: Mapping[str, Any] = caller_headers if rest == dict(caller_headers) else rest
    message.extra_headers = restored  # type: ignore[assignment,unused-ignore]


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


def _unsent_outcome(message: EmailMessage, sent: Any, stage: Stage) -> tuple[Outcome, str]:
    """The outcome when a backend returned without raising but did not count
    the message as sent. ``stage`` is how far the watched attempt got (a
    backend that swallows its own errors still passed through its stages)."""
    if not isinstance(sent, int):
        # Not the count Django's contract asks for: the backend may well have
        # sent it, so never risk a duplicate.
        return Outcome.UNCERTAIN, f"the backend returned {sent!r} instead of a count"
    if stage in MAY_HAVE_LEFT:
        verdict = esp_answer.from_status(message) if stage is Stage.ANSWERED else None
        if verdict is not None and verdict.outcome is not Outcome.ACCEPTED:
            return verdict.outcome, verdict.note or "the backend reported it as not sent"
        return (
            Outcome.UNCERTAIN,
            f"the backend reported it as not sent after reaching stage {stage.value}",
        )
    status = getattr(message, "anymail_status", None)
    # Anymail's own fresh status, untouched: a pre_send receiver cancelled the
    # send before any request (a backend that could not open its session never
    # gets that far, and has no status).
    cancelled = (
        stage in (Stage.PREPARE, Stage.UNKNOWN)
        and status is not None
        and getattr(status, "status", None) is None
        and getattr(status, "esp_response", None) is None
    )
    if cancelled or not message.recipients():
        # Anymail's pre_send receivers cancel a send (or drop every recipient)
        # on purpose; they would do so at every Anymail mailer, and a non-Anymail
        # mailer would then send what the application meant to suppress.
        return (
            Outcome.REJECTED,
            "the backend declined to send it (cancelled, or no recipients left)",
        )
    return Outcome.NOT_SENT, "the backend reported the message as not sent"


#: Anymail message attributes a plain (non-ESP) mailer cannot express: a batch
#: send would go out as one message with every recipient in To:, a template
#: as an empty body.
_ESP_ONLY_ATTRIBUTES = ("merge_data", "merge_metadata", "merge_headers", "template_id")


def _esp_only_feature(message: EmailMessage, backend: Any) -> str | None:
    """The ESP-only feature ``message`` uses that ``backend`` cannot keep."""
    if is_anymail_backend(backend) or is_router_class(type(backend)):
        return None
    for name in _ESP_ONLY_ATTRIBUTES:
        value = getattr(message, name, None)
        # AnymailMessage defaults these to its UNSET marker class, not None.
        if value is not None and not (isinstance(value, type) and value.__name__ == "UNSET"):
            return name
    return None


def _nested_path(message: EmailMessage, candidate: Candidate, attempt: Attempt) -> tuple[str, ...]:
    """Where a nested router (``candidate``) took the message: the mailers
    inside it down to the leaf that accepted it, read from the attempts the
    nested router left on the message."""
    if attempt.outcome is not Outcome.ACCEPTED or candidate.tracked:
        return ()
    inner = getattr(message, "mailrouter_attempts", None) or ()
    accepted = next(
        (a for a in reversed(inner) if isinstance(a, Attempt) and a.outcome is Outcome.ACCEPTED),
        None,
    )
    return () if accepted is None else (accepted.alias, *accepted.via)


def _is_timeout(error: BaseException) -> bool:
    for link in error_chain(error):
        if isinstance(link, TimeoutError) or "Timeout" in type(link).__name__:
            return True
    return False


class Dispatcher:
    """Runs attempts for one router; holds no per-message state."""

    def __init__(
        self,
        config: RouterConfig,
        pool: MailerPool,
        redact: Callable[[str], str],
        on_attempt_failed: Callable[[EmailMessage, Attempt], None],
        health: HealthView | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.health: HealthView = health or NoHealth()
        self.limiter = limiter
        self._config = config
        self._pool = pool
        self._redact = redact
        self._on_attempt_failed = on_attempt_failed

    def deliver(
        self, message: EmailMessage, candidates: tuple[Candidate, ...], batch: BatchState
    ) -> DeliveryResult:
        snapshot = MessageSnapshot(message)
        candidates = self.health.order(candidates)
        if self.limiter is None:
            return self._deliver_once(message, candidates, batch, snapshot)
        # Out of rate-limit budget at every candidate: wait for budget (up
        # to max_wait), never drop the message and never exceed the limit.
        deadline = time.monotonic() + self._config.max_wait
        while True:
            result = self._deliver_once(message, candidates, batch, snapshot)
            limited = [
                a.alias for a in result.attempts
                if a.outcome is Outcome.SKIPPED and (a.error or "").startswith(RATE_LIMITED)
            ]
            if not limited or any(a.outcome is not Outcome.SKIPPED for a in result.attempts):
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                return result
            time.sleep(min(left, max(0.001, self.limiter.seconds_until_budget(limited))))

    def _deliver_once(
        self,
        message: EmailMessage,
        candidates: tuple[Candidate, ...],
        batch: BatchState,
        snapshot: MessageSnapshot,
    ) -> DeliveryResult:
        """Candidates in rotation first; those out of rotation only as the
        last resort (see the module docstring). Health is asked one candidate
        at a time, when reached, so a half-open breaker's probe lease is only
        taken for a mailer actually tried."""
        attempts: list[Attempt] = []
        out_of_rotation: list[tuple[Candidate, Attempt]] = []
        lacked_budget = False
        for candidate in candidates:
            skip = self.health.skip_reason(candidate.alias) if candidate.tracked else None
            if skip is not None:
                skipped = Attempt(candidate.alias, Outcome.SKIPPED, skip)
                out_of_rotation.append((candidate, skipped))
                attempts.append(skipped)
                continue
            attempt = self._try(message, candidate, batch, snapshot)
            attempts.append(attempt)
            if attempt.outcome is Outcome.SKIPPED:
                lacked_budget = lacked_budget or (attempt.error or "").startswith(RATE_LIMITED)
            elif self._ends_message(attempt):
                return self._result(attempts)
        if not out_of_rotation or lacked_budget:
            return self._result(attempts)
        self._log_last_resort(candidates, batch)
        for candidate, skipped in out_of_rotation:
            # One record per mailer: the attempt replaces its skip, and says why
            # the mailer was out of rotation.
            attempts.remove(skipped)
            attempt = self._try(message, candidate, batch, snapshot, last_resort=skipped.error)
            attempts.append(attempt)
            if attempt.outcome is not Outcome.SKIPPED and self._ends_message(attempt):
                break
        return self._result(attempts)

    def _ends_message(self, attempt: Attempt) -> bool:
        """Whether no further candidate may be tried after ``attempt``."""
        if attempt.outcome is Outcome.UNCERTAIN:
            return self._config.delivery is not Delivery.AT_LEAST_ONCE
        return attempt.outcome in (Outcome.ACCEPTED, Outcome.REJECTED)

    @staticmethod
    def _result(attempts: list[Attempt]) -> DeliveryResult:
        last = attempts[-1] if attempts else None
        if last is not None and last.outcome is Outcome.ACCEPTED:
            return DeliveryResult(MessageStatus.SENT, last.alias, attempts)
        return DeliveryResult(status_from_attempts(attempts), None, attempts)

    @staticmethod
    def _log_last_resort(candidates: tuple[Candidate, ...], batch: BatchState) -> None:
        if batch.last_resort_logged:
            return
        batch.last_resort_logged = True
        logger.warning(
            "no mailer in rotation could take a message (candidates %s); trying the "
            "ones out of rotation (circuit open, drained, status page down) as the "
            "last resort",
            ", ".join(c.alias for c in candidates),
            extra={"mailrouter_alias": None, "mailrouter_outcome": "skipped"},
        )

    def _try(
        self,
        message: EmailMessage,
        candidate: Candidate,
        batch: BatchState,
        snapshot: MessageSnapshot,
        *,
        last_resort: str | None = None,
    ) -> Attempt:
        """One attempt at ``candidate`` within its rate budget; on failure the
        receivers see the message as the attempt left it, then it is restored."""
        tracked = candidate.tracked
        token: Token | None = None
        if tracked and self.limiter is not None:
            # After health: a mailer out of rotation uses no budget unless tried.
            taken = self.limiter.acquire(candidate.alias)
            if isinstance(taken, str):
                return Attempt(candidate.alias, Outcome.SKIPPED, taken, last_resort=last_resort)
            token = taken
        try:
            attempt = self._attempt(message, candidate, batch)
        except SendAborted:
            if token is not None and self.limiter is not None:
                self.limiter.release(token)  # nothing was sent
            raise
        if last_resort is not None:
            attempt = replace(attempt, last_resort=last_resort)
        if attempt.outcome is Outcome.SKIPPED:
            if token is not None and self.limiter is not None:
                self.limiter.release(token)  # nothing was sent
            return attempt
        if tracked:
            self.health.record(candidate.alias, attempt)
        if attempt.outcome is not Outcome.ACCEPTED:
            # Receivers see the message as the failed attempt left it; then
            # everything (theirs included) is undone: observers never change
            # what the next mailer sends.
            self._on_attempt_failed(message, attempt)
            snapshot.restore(message)
        return attempt

    def _attempt(self, message: EmailMessage, candidate: Candidate, batch: BatchState) -> Attempt:
        attempt = self._try_candidate(message, candidate, batch)
        return replace(
            attempt,
            message_id=getattr(message, "mailrouter_message_id", None),
            via=_nested_path(message, candidate, attempt),
        )

    def _try_candidate(
        self, message: EmailMessage, candidate: Candidate, batch: BatchState
    ) -> Attempt:
        alias = candidate.alias
        key: Any = (
            alias if candidate.connection is None else ("connection", id(candidate.connection))
        )
        reason = batch.down.get(key)
        if reason is not None:
            return Attempt(alias, Outcome.SKIPPED, f"not tried: {reason} earlier in this batch")
        started = time.perf_counter()
        stage = Stage.CONNECT
        marker: SMTPStage | HTTPStage | None = None
        backend = candidate.connection
        try:
            if backend is None:
                backend = self._pool.backend(alias)
            feature = _esp_only_feature(message, backend)
            if feature is not None:
                return Attempt(
                    alias,
                    Outcome.INCOMPATIBLE,
                    f"message.{feature} needs an ESP mailer (Anymail): this mailer would "
                    "send it as one plain message",
                )
            self._pool.ensure_open(key, backend)
            marker = watch(leaf_connection(backend)) or watch_http(backend)
            stage = Stage.UNKNOWN if marker is None else marker.stage
            # Anymail backends run it as their request starts (after pre_send);
            # a nested router runs it before its own leaf.
            if not isinstance(marker, HTTPStage) and not is_router_class(type(backend)):
                send_guard.run(message)
            sent = backend.send_messages([message])
        except SendAborted:
            raise
        except Exception as error:
            if marker is not None:
                stage = marker.stage
            attempt = self._judge(alias, message, error, stage, marker, started)
            if attempt.outcome in (Outcome.NOT_SENT, Outcome.UNCERTAIN) and backend is not None:
                self._pool.discard(key, backend)
                if stage is Stage.CONNECT or _is_timeout(error):
                    batch.down[key] = "timed out" if _is_timeout(error) else "connection failed"
            return attempt
        duration = time.perf_counter() - started
        if not sent:
            if marker is not None:
                stage = marker.stage
            outcome, text = _unsent_outcome(message, sent, stage)
            return Attempt(alias, outcome, self._redact(text)[:MAX_ERROR_TEXT], None, duration)
        note: str | None = None
        if isinstance(marker, SMTPStage) and marker.refused:
            note = describe_refused(marker.refused)
        elif isinstance(marker, HTTPStage):
            verdict = esp_answer.from_status(message)
            if verdict is not None and verdict.outcome is not Outcome.ACCEPTED:
                # "Sent", says the backend, but the ESP took no recipient.
                text = self._redact(verdict.note or "")[:MAX_ERROR_TEXT]
                return Attempt(alias, verdict.outcome, text, None, duration)
            note = verdict.note if verdict is not None else None
        if note is not None:
            note = self._redact(note)[:MAX_ERROR_TEXT]
        return self._accepted(alias, note, duration)

    def _judge(
        self,
        alias: str,
        message: EmailMessage,
        error: Exception,
        stage: Stage,
        marker: SMTPStage | HTTPStage | None,
        started: float,
    ) -> Attempt:
        """The attempt that raised ``error`` at ``stage``: an ESP's own answer
        first (per recipient), else the classifier."""
        duration = time.perf_counter() - started
        # One line: ESP errors embed pretty-printed JSON bodies.
        text = self._redact(describe_error(error))[:MAX_ERROR_TEXT]
        verdict = None
        if isinstance(marker, HTTPStage):
            if stage is Stage.ANSWERED:
                verdict = esp_answer.from_status(message)
            elif stage is Stage.BODY_SENT:
                verdict = esp_answer.from_error(error)
        if verdict is None:
            outcome = self._classify(error, stage)
            return Attempt(alias, outcome, text, type(error).__name__, duration, exception=error)
        if verdict.outcome is Outcome.ACCEPTED:
            # The ESP took it; the error came later (a post_send receiver, a
            # partly refused batch). Never sent again.
            late = f"{verdict.note or 'accepted'}; then {type(error).__name__}: {text}"
            return self._accepted(alias, self._redact(late)[:MAX_ERROR_TEXT], duration)
        text = self._redact(verdict.note or text)[:MAX_ERROR_TEXT]
        return Attempt(
            alias, verdict.outcome, text, type(error).__name__, duration, exception=error
        )

    def _accepted(self, alias: str, note: str | None, duration: float) -> Attempt:
        if note is not None:
            logger.warning(
                "%s %s",
                alias,
                note,
                extra={"mailrouter_alias": alias, "mailrouter_outcome": "accepted"},
            )
        return Attempt(alias, Outcome.ACCEPTED, note, None, duration)

    def _classify(self, error: BaseException, stage: Stage) -> Outcome:
        try:
            return Outcome(self._config.classifier(error, stage))
        except Exception as classifier_error:
            # A broken custom classifier must not cause a duplicate: assume the
            # mailer may have the message.
            logger.error(
                "classifier failed (%s); treating the attempt as uncertain",
                type(classifier_error).__name__,
            )
            return Outcome.UNCERTAIN
