"""What operators do to the outbox: look, retry, cancel, purge.

Shared by ``manage.py mailrouter outbox`` and the admin actions. Every change
is one conditional UPDATE on the state the operator saw: nothing here touches a
row a worker holds (``claimed`` or ``sending``), nothing sends a ``sent`` row
again, and an ``uncertain`` row is queued again only by its own action.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Min, QuerySet
from django.utils import timezone

from .claiming import rows
from .models import FINAL_STATUSES, OutboxMessage, RowStatus

#: Rows an operator may send again with a plain retry: nothing of them
#: reached a mailer, or it refused them.
RETRYABLE = (RowStatus.FAILED, RowStatus.REJECTED, RowStatus.CANCELLED, RowStatus.QUEUED)
#: ``uncertain`` rows only by their own, confirmed action: a mailer may have
#: the message, and sending it again may deliver a second copy.
UNCERTAIN_WARNING = (
    "a mailer may already have these messages: queueing them again may deliver a "
    "second copy (check the mailer's logs for their Message-IDs first)"
)
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


@dataclass(frozen=True)
class Retried:
    #: Rows queued for delivery now.
    queued: int
    #: Selected rows left alone because they are uncertain (a plain retry).
    uncertain: list[int]


def retry(
    database: str = "default",
    *,
    ids: Iterable[int] = (),
    failed: bool = False,
    seen: Mapping[int, str] | None = None,
) -> Retried:
    """Queue rows for delivery now: the given ids, or with ``failed`` every
    ``failed`` row. A row moves only if it is still in the state the operator
    saw (``seen``: id → status), or, where no state was seen, in one of
    ``RETRYABLE`` — never ``uncertain`` (``retry_uncertain`` does that), never
    ``sent`` or held by a worker. Each gets one more delivery at least (the
    retry policy applies again after it)."""
    if failed:
        return Retried(_requeue(rows(database).filter(status=RowStatus.FAILED)), [])
    ids = list(ids)
    seen = seen or {}
    by_state: dict[str, list[int]] = {}
    for pk in ids:
        state = seen.get(pk)
        if state is None or state in RETRYABLE:
            by_state.setdefault(state or "", []).append(pk)
    queued = 0
    for state, group in by_state.items():
        # Conditional on the state: a row that moved on since (a worker sent
        # it, or its send became uncertain) is left as it is now.
        statuses = (state,) if state else RETRYABLE
        queued += _requeue(rows(database).filter(pk__in=group, status__in=statuses))
    uncertain = sorted(rows(database).filter(
        pk__in=ids, status=RowStatus.UNCERTAIN
    ).values_list("pk", flat=True))
    return Retried(queued, uncertain)


def retry_uncertain(database: str = "default", *, ids: Iterable[int]) -> int:
    """Queue these rows for delivery now if they are still ``uncertain``:
    the operator's confirmed choice, knowing the ``UNCERTAIN_WARNING``."""
    return _requeue(rows(database).filter(pk__in=list(ids), status=RowStatus.UNCERTAIN))


def _requeue(selected: QuerySet[OutboxMessage]) -> int:
    # claimed_by cleared: a worker still finishing an earlier delivery of the
    # row can no longer write over it.
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
