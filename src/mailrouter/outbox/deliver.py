"""Deliver one claimed row through its router and record what happened.

The order of writes is the whole point:

1. ``claimed`` → ``sending`` is committed *before* the router is called (and
   only if this worker still holds the claim): if the worker dies from here
   on, the row becomes ``uncertain`` when its lease ends — never resent.
2. The router sends the message (failover, breakers, status pages apply).
3. Immediately before the request (after Anymail's ``pre_send`` receivers
   and anything else that runs first), the claim is checked again and the
   lease renewed in one conditional UPDATE (``send_guard``): a worker that
   was paused past its lease, whose row was taken back, sends nothing.
4. The router's outcome decides the row's next status, written only if this
   worker still holds the row; a transient database error does not lose it
   (the write is tried again until it lands), and an outcome that can no
   longer be written is logged at ERROR.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.mail import EmailMessage
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone

from .. import send_guard
from ..backend import RouterBackend
from ..config import Delivery, load_mailer_table
from ..errors import DeliveryError, SendAborted
from ..leaves import build_mailer
from ..outcomes import Attempt, MessageStatus
from ..report import send_signal
from ..runtime import build_redactor
from . import signals
from .claiming import rows
from .models import OutboxMessage, RowStatus
from .options import OutboxOptions, RetryPolicy, options_for
from .payload import PayloadError, decode
from .storable import storable

logger = logging.getLogger("mailrouter.outbox")

#: Database errors that may pass (a reset connection, a restarting server):
#: an outcome write is tried again after them.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
#: Seconds between tries of an outcome write: doubling from the first to the last.
WRITE_RETRY_FIRST = 0.05
WRITE_RETRY_MAX = 5.0


@dataclass(frozen=True)
class Decision:
    status: RowStatus
    #: For ``queued``: seconds until the next delivery.
    delay: float = 0.0


def decide(
    status: MessageStatus | None,
    deliveries: int,
    age: float,
    retry: RetryPolicy,
    *,
    at_least_once: bool,
    rng: random.Random | None = None,
) -> Decision:
    """The row's next status after its ``deliveries``-th delivery ended with
    the router's ``status`` (None: the router reported nothing usable)."""
    if status is MessageStatus.SENT:
        return Decision(RowStatus.SENT)
    if status in (MessageStatus.REJECTED, MessageStatus.NO_RECIPIENTS):
        # Nothing any mailer would take (no recipient left is nothing to send).
        return Decision(RowStatus.REJECTED)
    retryable = status is MessageStatus.FAILED or (
        status is MessageStatus.UNCERTAIN and at_least_once
    )
    if not retryable:
        # Uncertain, or a status this version does not know: never resend.
        return Decision(RowStatus.UNCERTAIN)
    if retry.gives_up(deliveries, age):
        return Decision(RowStatus.FAILED)
    return Decision(RowStatus.QUEUED, retry.delay(deliveries, rng))


def attempt_record(attempt: Attempt, delivery: int, at: datetime.datetime) -> dict[str, Any]:
    return {
        "delivery": delivery,
        "at": at.isoformat(),
        "alias": attempt.alias,
        "outcome": str(attempt.outcome),
        "error": attempt.error,
        "error_type": attempt.error_type,
        "duration": round(attempt.duration, 6),
        "message_id": attempt.message_id,
        "via": list(attempt.via),
        "last_resort": attempt.last_resort,
    }


def _message_status(message: EmailMessage) -> MessageStatus | None:
    value = getattr(message, "mailrouter_status", None)
    try:
        return None if value is None else MessageStatus(value)
    except ValueError:
        return None


class RowDeliverer:
    """Delivers rows for one worker thread; keeps one router per target."""

    def __init__(self, database: str, holder: str, rng: random.Random | None = None) -> None:
        self.database = database
        self.holder = holder
        self._rng = rng or random.Random()
        self._routers: dict[str, RouterBackend] = {}
        self._redactor: Callable[[str], str] | None = None

    def _redact(self, text: str) -> str:
        if self._redactor is None:
            self._redactor = build_redactor(load_mailer_table())
        return self._redactor(text)

    def router(self, mailer: str) -> RouterBackend:
        router = self._routers.get(mailer)
        if router is None:
            if mailer:
                built = build_mailer(mailer, load_mailer_table())
                if not isinstance(built, RouterBackend):
                    raise TypeError(f"outbox mailer {mailer!r} is not a RouterBackend")
                router = built
            else:
                router = RouterBackend()
            router.open()
            self._routers[mailer] = router
        return router

    def close(self) -> None:
        for router in self._routers.values():
            router.close()
        self._routers.clear()

    def settle_stopped(self, row: OutboxMessage) -> tuple[RowStatus, float]:
        """A row whose worker stopped mid-send (a mailer may have it): uncertain,
        or, when its router delivers at least once, retried like a failed
        delivery. For ``claiming.reclaim_expired``."""
        try:
            at_least_once = self.router(row.mailer).config.delivery is Delivery.AT_LEAST_ONCE
            retry = options_for(row.outbox_alias).retry
        except Exception:  # the settings changed: never resend on a guess
            return RowStatus.UNCERTAIN, 0.0
        age = (timezone.now() - row.created_at).total_seconds()
        decision = decide(MessageStatus.UNCERTAIN, row.delivery_count, age, retry,
                          at_least_once=at_least_once, rng=self._rng)
        return decision.status, decision.delay

    def deliver(self, row: OutboxMessage, lease: float) -> RowStatus | None:
        """Deliver one row this worker claimed. Returns its new status, or
        None when the claim was lost (its lease ended; the row is queued again)."""
        started = timezone.now()
        marked = rows(self.database).filter(
            pk=row.pk, status=RowStatus.CLAIMED, claimed_by=self.holder
        ).update(
            status=RowStatus.SENDING,
            delivery_started_at=started,
            delivery_count=F("delivery_count") + 1,
            lease_until=started + datetime.timedelta(seconds=lease),
        )
        if not marked:
            return None
        deliveries = row.delivery_count + 1
        try:
            options: OutboxOptions | None = options_for(row.outbox_alias)
        except Exception as error:  # the outbox was removed from the settings
            options = None
            logger.warning("row %s: %s", row.pk, error)
        retry = options.retry if options is not None else RetryPolicy()
        try:
            message = decode(row.payload)
        except (PayloadError, KeyError, TypeError, ValueError) as error:
            # Nothing was sent: the stored row cannot be read by this version.
            return self._finish(row, deliveries, RowStatus.FAILED, [], None,
                                f"unreadable payload: {error}", 0.0)
        age = (timezone.now() - row.created_at).total_seconds()
        try:
            router = self.router(row.mailer)
        except Exception as error:
            # Nothing was sent (e.g. the settings changed): retry like a failure.
            decision = decide(MessageStatus.FAILED, deliveries, age, retry,
                              at_least_once=False, rng=self._rng)
            text = self._redact(f"cannot build mailer {row.mailer!r}: "
                                f"{type(error).__name__}: {error}")
            return self._finish(row, deliveries, decision.status, [], None, text,
                                decision.delay)
        send_guard.install(message, self._claim_check(row, deliveries, lease))
        try:
            router.send_messages([message])
        except DeliveryError:
            pass  # the outcome is on the message
        except SendAborted as error:
            return self._withdrawn(row, deliveries, age, retry, str(error))
        except Exception as error:
            # The router itself failed (not a mailer: those are classified).
            # It may have handed the message over before failing.
            text = self._redact(f"{type(error).__name__}: {error}")
            attempts = list(getattr(message, "mailrouter_attempts", None) or [])
            with contextlib.suppress(Exception):  # a fresh router for the next row
                self._routers.pop(row.mailer).close()
            return self._finish(row, deliveries, RowStatus.UNCERTAIN, attempts, None, text, 0.0)
        status = _message_status(message)
        at_least_once = router.config.delivery is Delivery.AT_LEAST_ONCE
        decision = decide(status, deliveries, age, retry, at_least_once=at_least_once,
                          rng=self._rng)
        attempts = list(getattr(message, "mailrouter_attempts", None) or [])
        problem = next((a.describe() for a in reversed(attempts) if a.outcome != "accepted"), "")
        if status is None:
            problem = "the router reported no status for the message"
        return self._finish(
            row, deliveries, decision.status, attempts,
            getattr(message, "sent_using", None), problem, decision.delay,
        )

    def _claim_check(self, row: OutboxMessage, deliveries: int, lease: float) -> Callable[[], None]:
        """The check run just before each request of this delivery: this
        worker still holds the row and its lease has not run out; renews the
        lease (a full one for the request) in the same conditional UPDATE, so
        no worker can take the row back while the request runs."""

        def check() -> None:
            now = timezone.now()
            try:
                renewed = rows(self.database).filter(
                    pk=row.pk, status=RowStatus.SENDING, claimed_by=self.holder,
                    delivery_count=deliveries, lease_until__gt=now,
                ).update(lease_until=now + datetime.timedelta(seconds=lease))
            except DatabaseError as error:
                raise SendAborted(
                    f"outbox row {row.pk}: the claim could not be confirmed before the "
                    f"request ({type(error).__name__}); nothing was sent"
                ) from error
            if not renewed:
                raise SendAborted(
                    f"outbox row {row.pk}: this worker's claim ended before the request "
                    "(its lease ran out, or the row was taken back); nothing was sent"
                )

        return check

    def _withdrawn(
        self, row: OutboxMessage, deliveries: int, age: float, retry: RetryPolicy, reason: str
    ) -> RowStatus | None:
        """The claim check refused the request: nothing of this delivery left,
        so it counts as one that no mailer took (if the row is still this
        worker's to write: usually another worker or an operator has it)."""
        decision = decide(MessageStatus.FAILED, deliveries, age, retry, at_least_once=False,
                          rng=self._rng)
        status = self._finish(row, deliveries, decision.status, [], None, reason,
                              decision.delay, withdrawn=True)
        if status is None:
            logger.warning("row %s (%s): %s", row.pk, row.message_id, reason,
                           extra={"mailrouter_outbox_row": row.pk})
        return status

    def _write(self, row: OutboxMessage, deliveries: int, changes: dict[str, Any]) -> bool:
        """Write a delivery's outcome if this worker still holds the row;
        whether it did. A transient database error is not the end of it: the
        live worker is the only one that knows the outcome, so the write is
        tried again (waits doubling up to ``WRITE_RETRY_MAX``) until it lands
        or the process dies."""
        wait = WRITE_RETRY_FIRST
        connection = connections[self.database]
        while True:
            try:
                # Also over ``uncertain``: if the lease ended while this live
                # worker was still sending, what it learnt replaces the guess.
                return bool(rows(self.database).filter(
                    pk=row.pk, claimed_by=self.holder, delivery_count=deliveries,
                    status__in=(RowStatus.SENDING, RowStatus.UNCERTAIN),
                ).update(**changes))
            except TRANSIENT_ERRORS as error:
                if connection.in_atomic_block:
                    raise  # the caller's transaction is lost anyway; it decides
                logger.warning(
                    "row %s (%s): recording %s failed (%s: %s); "
                    "trying again in %.2fs", row.pk, row.message_id, changes["status"],
                    type(error).__name__, error, wait,
                    extra={"mailrouter_outbox_row": row.pk},
                )
                with contextlib.suppress(DatabaseError):
                    connection.close()  # the next query connects afresh
                time.sleep(wait)
                wait = min(wait * 2, WRITE_RETRY_MAX)

    def _finish(
        self,
        row: OutboxMessage,
        deliveries: int,
        status: RowStatus,
        attempts: list[Attempt],
        sent_using: str | None,
        error: str,
        delay: float,
        *,
        withdrawn: bool = False,
    ) -> RowStatus | None:
        now = timezone.now()
        records = list(row.attempts or []) + [
            attempt_record(attempt, deliveries, now) for attempt in attempts
        ]
        # A mailer's answer may hold what the database cannot store (a NUL in
        # a reason phrase): the outcome must be written all the same.
        changes: dict[str, Any] = storable({
            "status": status,
            "attempts": records,
            "last_error": "" if status is RowStatus.SENT else error,
            "sent_using": sent_using or "",
            "lease_until": None,
        })
        if status is RowStatus.QUEUED:
            changes["next_attempt_at"] = now + datetime.timedelta(seconds=delay)
            changes["claimed_by"] = ""
        else:
            changes["finished_at"] = now
        if not self._write(row, deliveries, changes):
            if not withdrawn:
                # Never silent: what happened to a message the row no longer shows.
                logger.error(
                    "row %s (%s): delivery %s ended %s%s, but this "
                    "worker no longer holds the row (its lease ended and the row was "
                    "taken back): this outcome is not recorded in it%s",
                    row.pk, row.message_id, deliveries, status.value,
                    f" via {sent_using}" if sent_using else "", f": {error}" if error else "",
                    extra={"mailrouter_outbox_row": row.pk,
                           "mailrouter_outbox_status": status.value},
                )
            return None
        for name, value in changes.items():
            setattr(row, name, value)
        row.delivery_count = deliveries
        level = logging.INFO if status in (RowStatus.SENT, RowStatus.QUEUED) else logging.WARNING
        logger.log(
            level, "row %s %s (delivery %s%s)%s", row.pk, status.value,
            deliveries, f", via {sent_using}" if sent_using else "",
            f": {error}" if error and status is not RowStatus.SENT else "",
            extra={"mailrouter_outbox_row": row.pk, "mailrouter_outbox_status": status.value},
        )
        signal = STATUS_SIGNALS.get(status)
        if signal is not None:
            send_signal(signal, OutboxMessage, row=row, status=str(status))
        return status


STATUS_SIGNALS: dict[RowStatus, Signal] = {
    RowStatus.SENT: signals.row_sent,
    RowStatus.REJECTED: signals.row_failed,
    RowStatus.FAILED: signals.row_failed,
    RowStatus.UNCERTAIN: signals.row_uncertain,
}
