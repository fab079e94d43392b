"""``RouterBackend``: the Django email backend that routes and fails over.

Data flows one way: settings → validated config (``config``) → route
selection (``routing``, pure) → attempts (``delivery``, I/O) → outcome records
on the message → signals and logs (``report``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from . import report
from .compat import BACKENDS_TAKE_ALIAS, drop_ignored_options, ignore_unknown_kwargs
from .concurrent_batch import ConcurrentSender
from .config import ROUTER_OPTION_KEYS, MailerTable, RouterConfig, legacy_settings
from .delivery import (
    BatchState,
    DeliveryResult,
    Dispatcher,
    ensure_message_id,
    message_problem,
    restore_caller_headers,
)
from .errors import ConfigurationError, DeliveryError, FailedMessage, InvalidMessageError
from .health.breaker import State
from .health.monitor import build_health
from .operations import Explanation, explain_message
from .outcomes import Attempt, MessageStatus
from .pool import MailerPool
from .probe import ProbeResult, probe_mailer
from .ratelimit import RateLimiter, storage_for
from .routing import Candidate, RoutingContext, Selection, may_reach_a_router, select
from .runtime import RouterRuntime, load_runtime
from .strategies import StrategyKind, order

logger = logging.getLogger("mailrouter")

#: The routers now routing a message in this thread: (router alias, id of the
#: message) frames, outermost first. A router that a router hands a message to
#: finds itself nested, routes by its own routes (the pin or connection was
#: honoured above it), and refuses to send back into a router on the path.
_ROUTING: ContextVar[tuple[tuple[str | None, int], ...]] = ContextVar(
    "mailrouter_routing", default=()
)


def _raise_for(failures: list[FailedMessage], sent: int, *, fail_silently: bool) -> None:
    """The error for a batch's failed messages, the mailer's own exception as
    its cause. A message Django found invalid is the caller's bug, raised as
    a ValueError even with ``fail_silently`` (as Django's backends raise it)."""
    invalid = [f for f in failures if f.attempts and f.attempts[-1].is_callers_error]
    if invalid:
        raise InvalidMessageError(failures if not fail_silently else invalid, sent) from (
            invalid[0].attempts[-1].exception
        )
    if fail_silently:
        return
    cause = next(
        (a.exception for f in failures for a in reversed(f.attempts) if a.exception is not None),
        None,
    )
    raise DeliveryError(failures, sent) from cause


class RouterBackend(BaseEmailBackend):
    """Routes each message to a mailer by rules and fails over in order.

    With Django 6.1 ``MAILERS``, configure it as a mailer whose OPTIONS hold
    ``routes`` (and the other router options); otherwise set
    ``EMAIL_BACKEND = "mailrouter.backend.RouterBackend"`` and ``MAILROUTER``.

    ``send_messages()`` processes the batch message by message, reusing one
    connection per mailer, and returns the number of messages accepted. Each
    message gets ``sent_using``, ``mailrouter_attempts``, ``mailrouter_status``
    and ``mailrouter_route``. If any message ended without a mailer, it then
    raises one ``DeliveryError`` naming all of them, unless ``fail_silently``.
    """

    #: Marks router classes (``mailrouter.config.ROUTER_MARKER``): lower layers
    #: (configuration, leaves, the failover loop) recognize a nested router
    #: without importing this module.
    is_mailrouter = True

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
            # Legacy style: options come from MAILROUTER; keyword arguments
            # that are not router options are ignored, as Django's backends do
            # (Django < 6.1's send_mail() always passes username/password).
            raw = legacy_settings().get("OPTIONS", {})
            if not isinstance(raw, dict):
                raise ConfigurationError(["MAILROUTER['OPTIONS'] must be a dict"])
            given = ignore_unknown_kwargs(type(self), options, ROUTER_OPTION_KEYS)
            options = {**raw, **given}
        self._runtime: RouterRuntime = load_runtime(alias, options)
        config = self._runtime.config
        self._pool = MailerPool(config, self._runtime.table)
        limiter = None
        if config.rate_limits:
            limiter = RateLimiter(config.rate_limits, storage_for(config.rate_limits_cache))
        self._dispatcher = Dispatcher(
            config, self._pool, self._runtime.redact, self._attempt_failed,
            health=build_health(config, on_state_changed=self._state_changed), limiter=limiter,
        )
        self._workers = None
        if config.concurrency > 1:
            self._workers = ConcurrentSender(self, self._dispatcher, self._runtime)
        self._held_open = False
        self._lock = threading.RLock()
        self._matcher_failures: set[str] = set()
        #: Messages of the running send whose Message-ID we generated: the
        #: caller's headers to put back when the message is finished.
        self._caller_headers: dict[int, tuple[EmailMessage, Mapping[str, Any]]] = {}
        self._context = self._runtime.routing_context(
            (alias,), is_this_router=self._is_this_router, matcher_failed=self._matcher_failed
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> RouterBackend:
        # A router is a resource, not a value: messages that carry it as their
        # legacy ``connection`` get deep-copied (e.g. by the locmem backend).
        return self

    @property
    def config(self) -> RouterConfig:
        """This router's validated options (routes, delivery, timeouts, health)."""
        return self._runtime.config

    @property
    def mailer_table(self) -> MailerTable:
        """The mailer aliases this router can route to, from ``MAILERS`` or
        ``MAILROUTER['MAILERS']``."""
        return self._runtime.table

    def probe(self, alias: str, *, timeout: float | None = None) -> ProbeResult:
        """Open and close mailer ``alias``'s connection without sending mail
        (see ``mailrouter.probe``): for readiness checks and ``manage.py
        mailrouter probe``. Failures are returned, redacted, not raised."""
        if alias not in self._runtime.table.entries:
            raise KeyError(f"{alias!r} is not a mailer alias")
        return probe_mailer(
            alias, self._runtime.table, self._runtime.config, self._runtime.redact,
            timeout=timeout,
        )

    def explain(self, message: EmailMessage) -> Explanation:
        """Which route and candidates ``message`` would get now, and why each
        candidate would be tried or skipped. Sends nothing, opens nothing,
        takes no probe lease; with the health cache unreachable the route is
        still shown and each candidate's health is ``unknown``."""
        return explain_message(
            message, self._runtime, self.alias, is_this_router=self._is_this_router
        )

    def open(self) -> bool:
        """Keep leaf connections open across ``send_messages()`` calls until
        ``close()``. Connections are opened lazily, on each mailer's first use."""
        with self._lock:
            if self._held_open:
                return False
            self._held_open = True
            return True

    def close(self) -> None:
        """Close every leaf connection this router opened (harmless if none)."""
        with self._lock:
            self._held_open = False
            self._pool.close_all()
            if self._workers is not None:
                self._workers.close()

    def send_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        messages = list(email_messages)
        if not messages:
            return 0
        for index, message in enumerate(messages):
            # Checked before anything is sent: a bad item must not stop the
            # batch half-way, leaving the caller unsure what went out.
            if not callable(getattr(message, "recipients", None)):
                raise TypeError(
                    f"send_messages() takes EmailMessage objects; item {index} is "
                    f"{type(message).__name__} (nothing was sent)"
                )
        failures: list[FailedMessage] = []
        sent = 0
        with self._lock:
            batch = BatchState()
            self._matcher_failures = set()
            try:
                self._dispatcher.health.begin_batch(self._runtime.leaf_aliases)
                outcomes = None
                if self._workers is not None and self._workers.can_send(messages):
                    outcomes = self._workers.send(messages, batch)
                for index, message in enumerate(messages):
                    if outcomes is None:
                        failure = self._send_one(message, batch)
                    else:
                        failure = outcomes[index]
                    if failure is None:
                        sent += getattr(message, "sent_using", None) is not None
                    else:
                        failures.append(failure)
            finally:
                for message, headers in self._caller_headers.values():
                    restore_caller_headers(message, headers)
                self._caller_headers.clear()
                self._dispatcher.health.end_batch()
                if not self._held_open:
                    self._pool.close_all()
                    if self._workers is not None:
                        self._workers.close()
        if failures:
            _raise_for(failures, sent, fail_silently=self.fail_silently)
        return sent

    def _send_one(self, message: EmailMessage, batch: BatchState) -> FailedMessage | None:
        selection = self._select(message)
        if selection is None:
            return None
        if selection.problem is not None:
            return self._unroutable(message, selection)
        candidates = selection.candidates
        if selection.strategy.kind is not StrategyKind.FAILOVER:
            candidates = self._ordered(message, selection)
        if may_reach_a_router(candidates):
            result = self._deliver(message, candidates, batch)
        else:
            result = self._dispatcher.deliver(message, candidates, batch)
        return self._finish(message, selection, result)

    def _select(self, message: EmailMessage) -> Selection | None:
        """Reset the message's outcome attributes and route it (None: it has
        no recipients, so there is nothing to send)."""
        message.sent_using = None  # type: ignore[attr-defined]
        message.mailrouter_attempts = []  # type: ignore[attr-defined]
        message.mailrouter_route = None  # type: ignore[attr-defined]
        message.mailrouter_message_id = None  # type: ignore[attr-defined]
        # Every step before the first attempt runs on the caller's object and
        # may raise (a str in ``to``, ``extra_headers=None``, a broken
        # ``recipients()``): that message fails with the reason, the batch goes on.
        frames = _ROUTING.get()
        try:
            problem = message_problem(message)
            if problem is None:
                if not message.recipients():
                    # As Django's own backends do: nothing to send, nothing counted.
                    message.mailrouter_status = MessageStatus.NO_RECIPIENTS  # type: ignore[attr-defined]
                    return None
                # Before routing: every failure, even "no route", names the message by it.
                # Nested, the outer router's ID is in the headers: kept.
                caller_headers = ensure_message_id(message)
                if caller_headers is not None:
                    self._caller_headers[id(message)] = (message, caller_headers)
                context = self._context if not frames else self._routing_context(frames, message)
                selection = select(message, self._runtime.config, self._runtime.table, context)
                message.mailrouter_route = selection.route  # type: ignore[attr-defined]
                return selection
        except Exception as error:
            problem = f"the message cannot be sent: {type(error).__name__}: {error}"
        return Selection(getattr(message, "mailrouter_route", None), problem=problem)

    def _ordered(self, message: EmailMessage, selection: Selection) -> tuple[Candidate, ...]:
        candidates = selection.candidates
        if selection.strategy.kind is StrategyKind.FAILOVER:
            return candidates
        aliases = [candidate.alias for candidate in candidates]
        return order(candidates, aliases, selection.strategy, message)[0]

    def _unroutable(self, message: EmailMessage, selection: Selection) -> FailedMessage:
        """Fail a message no attempt can be made for (no route, a bad message)."""
        self._give_back_headers(message)
        reason = self._runtime.redact(selection.problem or "the message cannot be routed")
        message.mailrouter_status = MessageStatus.FAILED  # type: ignore[attr-defined]
        report.message_failed(self, message, MessageStatus.FAILED, [], reason)
        return FailedMessage(message, MessageStatus.FAILED, (), reason)

    def _deliver(
        self, message: EmailMessage, candidates: tuple[Candidate, ...], batch: BatchState
    ) -> DeliveryResult:
        """The attempts, in this thread. A candidate that may be a router
        learns that this router is on the message's path."""
        if may_reach_a_router(candidates):
            token = _ROUTING.set((*_ROUTING.get(), (self.alias, id(message))))
            try:
                return self._dispatcher.deliver(message, candidates, batch)
            finally:
                _ROUTING.reset(token)
        return self._dispatcher.deliver(message, candidates, batch)

    def _finish(
        self, message: EmailMessage, selection: Selection, result: DeliveryResult
    ) -> FailedMessage | None:
        """Store a delivered message's outcome on it and report it."""
        self._give_back_headers(message)
        message_id = message.mailrouter_message_id  # type: ignore[attr-defined]
        # Skipped candidates' records too carry the ID the message was sent with.
        attempts = [
            attempt if attempt.message_id == message_id else replace(attempt, message_id=message_id)
            for attempt in result.attempts
        ]
        # Always a leaf: through a nested router, the leaf that accepted it.
        sent_using = attempts[-1].leaf if result.status is MessageStatus.SENT else None
        # Again: a nested router it went through has set its own.
        message.mailrouter_route = selection.route  # type: ignore[attr-defined]
        message.sent_using = sent_using  # type: ignore[attr-defined]
        message.mailrouter_attempts = attempts  # type: ignore[attr-defined]
        message.mailrouter_status = result.status  # type: ignore[attr-defined]
        if sent_using is not None:
            report.message_sent(self, message, sent_using, attempts)
            return None
        report.message_failed(self, message, result.status, attempts, None)
        return FailedMessage(message, result.status, tuple(attempts))

    def _give_back_headers(self, message: EmailMessage) -> None:
        """The caller's ``extra_headers`` back on a finished message (the
        Message-ID it was sent with stays in ``mailrouter_message_id``)."""
        entry = self._caller_headers.pop(id(message), None)
        if entry is not None:
            restore_caller_headers(message, entry[1])

    def _routing_context(
        self, frames: tuple[tuple[str | None, int], ...], message: EmailMessage
    ) -> RoutingContext:
        outer = tuple(name for name, message_id in frames if message_id == id(message))
        if not outer:
            return self._context  # e.g. a signal receiver sending its own mail
        return self._runtime.routing_context(
            (*outer, self.alias),
            is_this_router=self._is_this_router,
            matcher_failed=self._matcher_failed,
        )

    def _is_this_router(self, connection: Any) -> bool:
        if connection is self:
            return True
        return type(connection) is type(self) and getattr(connection, "alias", None) == self.alias

    def _matcher_failed(self, route: str, error: Exception) -> None:
        """A ``callable`` matcher raised: its route does not match. Logged once
        per route per batch, so a broken rule cannot flood the log."""
        if route in self._matcher_failures:
            return
        self._matcher_failures.add(route)
        logger.error(
            "route %r: its matcher raised %s: %s; the route is treated as not matching",
            route, type(error).__name__, self._runtime.redact(str(error)),
            extra={"mailrouter_route": route},
        )

    def _attempt_failed(self, message: EmailMessage, attempt: Attempt) -> None:
        report.attempt_failed(self, message, attempt)

    def _state_changed(self, alias: str, old: State, new: State, reason: str) -> None:
        report.mailer_state_changed(self, alias, old, new, reason)
