"""Which worker holds which rows: claim due rows under a lease, take back
expired leases.

On PostgreSQL (and MySQL 8) a claim is ``SELECT … FOR UPDATE SKIP LOCKED``:
workers on many machines take disjoint rows without waiting on each other.
Every state change is also conditional on the row's current status and
holder, so even where SKIP LOCKED is missing (SQLite) no two workers can
deliver the same row; SQLite simply serialises them (run one worker).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from .models import OutboxMessage, RowStatus

STOPPED_MID_SEND = (
    "the worker delivering this message stopped after the delivery started "
    "(its lease ended): a mailer may have it, so it is not sent again"
)


def rows(database: str) -> QuerySet[OutboxMessage]:
    return OutboxMessage.objects.using(database)


def claim(
    database: str, holder: str, limit: int, lease: float, now: datetime.datetime | None = None
) -> list[OutboxMessage]:
    """Claim up to ``limit`` due rows for ``holder`` until ``now + lease``."""
    now = now or timezone.now()
    with transaction.atomic(using=database):
        due = rows(database).filter(status=RowStatus.QUEUED, next_attempt_at__lte=now)
        if connections[database].features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        ids = list(due.order_by("next_attempt_at", "id").values_list("id", flat=True)[:limit])
        if not ids:
            return []
        rows(database).filter(id__in=ids, status=RowStatus.QUEUED).update(
            status=RowStatus.CLAIMED,
            claimed_by=holder,
            lease_until=now + datetime.timedelta(seconds=lease),
        )
    return list(
        rows(database)
        .filter(id__in=ids, status=RowStatus.CLAIMED, claimed_by=holder)
        .order_by("next_attempt_at", "id")
    )


def release(database: str, holder: str) -> int:
    """Give back ``holder``'s claimed rows it did not start (a worker stopping)."""
    return rows(database).filter(status=RowStatus.CLAIMED, claimed_by=holder).update(
        status=RowStatus.QUEUED, claimed_by="", lease_until=None
    )


#: What becomes of a row whose worker stopped mid-send: its new status and,
#: for ``queued``, the seconds until it is tried again.
Settle = Callable[[OutboxMessage], tuple[RowStatus, float]]

STOPPED_RETRIED = (
    "the worker delivering this message stopped after the delivery started "
    "(its lease ended): a mailer may have it; tried again because its router "
    "delivers at least once"
)

STOPPED_GAVE_UP = (
    "the worker delivering this message stopped after the delivery started "
    "(its lease ended): a mailer may have it; its router delivers at least once, "
    "but its retries are used up"
)


def uncertain_always(row: OutboxMessage) -> tuple[RowStatus, float]:
    return RowStatus.UNCERTAIN, 0.0


@dataclass(frozen=True)
class Reclaimed:
    #: Claimed but never started: back in the queue.
    requeued: int
    #: Started by a worker that stopped, with the status each got: uncertain,
    #: or (at-least-once delivery) queued again or failed.
    stopped: list[OutboxMessage]

    @property
    def uncertain(self) -> list[OutboxMessage]:
        return [row for row in self.stopped if row.status == RowStatus.UNCERTAIN]


def reclaim_expired(
    database: str, now: datetime.datetime | None = None, settle: Settle = uncertain_always
) -> Reclaimed:
    """Take back rows whose holder's lease ended. A row that was being sent
    gets the status ``settle`` gives it (by default ``uncertain``)."""
    now = now or timezone.now()
    requeued = rows(database).filter(status=RowStatus.CLAIMED, lease_until__lt=now).update(
        status=RowStatus.QUEUED, claimed_by="", lease_until=None
    )
    stale = list(rows(database).filter(status=RowStatus.SENDING, lease_until__lt=now))
    stopped = []
    for row in stale:
        status, delay = settle(row)
        changes: dict[str, Any] = {"status": status}
        if status == RowStatus.QUEUED:
            changes.update(last_error=STOPPED_RETRIED, claimed_by="", lease_until=None,
                           next_attempt_at=now + datetime.timedelta(seconds=delay))
        else:
            changes.update(last_error=STOPPED_MID_SEND if status == RowStatus.UNCERTAIN
                           else STOPPED_GAVE_UP, finished_at=now)
        # Conditional: the holder may have finished the row meanwhile, or
        # renewed its lease just before its request (``send_guard``).
        changed = rows(database).filter(
            pk=row.pk, status=RowStatus.SENDING, claimed_by=row.claimed_by,
            delivery_count=row.delivery_count, lease_until__lt=now,
        ).update(**changes)
        if changed:
            for name, value in changes.items():
                setattr(row, name, value)
            stopped.append(row)
    return Reclaimed(requeued, stopped)
