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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Reclaimed:
    #: Claimed but never started: back in the queue.
    requeued: int
    #: Started by a worker that stopped: now uncertain.
    uncertain: list[OutboxMessage]


def reclaim_expired(database: str, now: datetime.datetime | None = None) -> Reclaimed:
    """Take back rows whose holder's lease ended."""
    now = now or timezone.now()
    requeued = rows(database).filter(status=RowStatus.CLAIMED, lease_until__lt=now).update(
        status=RowStatus.QUEUED, claimed_by="", lease_until=None
    )
    stale = list(rows(database).filter(status=RowStatus.SENDING, lease_until__lt=now))
    uncertain = []
    for row in stale:
        # Conditional: the holder may have finished the row meanwhile.
        changed = rows(database).filter(
            pk=row.pk, status=RowStatus.SENDING, claimed_by=row.claimed_by,
            delivery_count=row.delivery_count,
        ).update(status=RowStatus.UNCERTAIN, last_error=STOPPED_MID_SEND, finished_at=now)
        if changed:
            row.status = RowStatus.UNCERTAIN
            row.last_error = STOPPED_MID_SEND
            row.finished_at = now
            uncertain.append(row)
    return Reclaimed(requeued, uncertain)
