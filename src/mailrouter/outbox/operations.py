"""What operators do to the outbox: look, retry, cancel, purge.

Shared by ``manage.py mailrouter outbox`` and the admin actions. Nothing here
touches a row a worker holds (``claimed`` or ``sending``), and nothing sends
a ``sent`` row again.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Min
from django.utils import timezone

from .claiming import rows
from .models import FINAL_STATUSES, RowStatus

#: Rows an operator may send again. ``uncertain`` only by explicit choice: a
#: mailer may have it, which the operator has checked.
RETRYABLE = (RowStatus.FAILED, RowStatus.REJECTED, RowStatus.UNCERTAIN,
             RowStatus.CANCELLED, RowStatus.QUEUED)
CANCELLABLE = (RowStatus.QUEUED,)


@dataclass(frozen=True)
class OutboxSummary:
    counts: dict[str, int]
    #: Seconds since the oldest row still waiting (queued, claimed, sending) was stored.
    oldest_pending_age: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "oldest_queued_age": self.oldest_pending_age}


def summary(database: str = "default", now: datetime.datetime | None = None) -> OutboxSummary:
    now = now or timezone.now()
    counts = {status.value: 0 for status in RowStatus}
    for item in rows(database).values("status").annotate(n=Count("id")):
        counts[item["status"]] = item["n"]
    oldest = rows(database).filter(
        status__in=(RowStatus.QUEUED, RowStatus.CLAIMED, RowStatus.SENDING)
    ).aggregate(oldest=Min("created_at"))["oldest"]
    age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
    return OutboxSummary(counts, age)


def retry(
    database: str = "default",
    *,
    ids: Iterable[int] = (),
    failed: bool = False,
) -> int:
    """Queue rows for delivery now: the given ids (any retryable status), or
    with ``failed`` every ``failed`` row. Each gets one more delivery at least
    (the retry policy applies again after it). Returns how many were queued."""
    if failed:
        selected = rows(database).filter(status=RowStatus.FAILED)
    else:
        selected = rows(database).filter(pk__in=list(ids), status__in=RETRYABLE)
    return selected.update(
        status=RowStatus.QUEUED, next_attempt_at=timezone.now(), claimed_by="",
        lease_until=None, finished_at=None,
    )


def cancel(database: str = "default", *, ids: Iterable[int]) -> int:
    """Cancel queued rows (a worker holding a row finishes it first)."""
    return rows(database).filter(pk__in=list(ids), status__in=CANCELLABLE).update(
        status=RowStatus.CANCELLED, finished_at=timezone.now()
    )


def purge(database: str = "default", *, older_than: float) -> int:
    """Delete rows that ended more than ``older_than`` seconds ago."""
    cutoff = timezone.now() - datetime.timedelta(seconds=older_than)
    deleted, _ = rows(database).filter(
        status__in=FINAL_STATUSES, finished_at__lt=cutoff
    ).delete()
    return deleted
