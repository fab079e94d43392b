"""The outbox worker loop behind ``manage.py mailrouter outbox-worker``.

Each worker thread takes back expired leases, claims a batch of due rows
and delivers them one by one, committing each row's status before the next.
Stopping (``stop`` set, e.g. on SIGTERM) finishes the current row and gives
back the claimed rows not yet started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field

from django.db import DatabaseError, connections

from ..report import send_signal
from .claiming import claim, reclaim_expired, release
from .deliver import STATUS_SIGNALS, RowDeliverer
from .models import OutboxMessage, RowStatus
from .options import DEFAULT_BATCH, DEFAULT_LEASE, DEFAULT_POLL_INTERVAL, configured_outboxes

logger = logging.getLogger("mailrouter.outbox")


def new_holder() -> str:
    """A name for one worker thread, unique across machines and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def worker_lease() -> float:
    """The lease a worker claims rows for: the longest any outbox asks."""
    return max((options.lease for options in configured_outboxes()), default=DEFAULT_LEASE)


@dataclass
class WorkerStats:
    #: Rows by the status this worker left them in ("lost" = claim taken back).
    rows: Counter[str] = field(default_factory=Counter)

    def add(self, other: WorkerStats) -> None:
        self.rows.update(other.rows)


def drain(
    database: str = "default",
    *,
    batch: int = DEFAULT_BATCH,
    once: bool = False,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    stop: threading.Event | None = None,
    holder: str | None = None,
    lease: float | None = None,
) -> WorkerStats:
    """Deliver due rows until ``stop`` is set (or, with ``once``, until none
    is due). In the poll loop a database error is logged and retried after
    ``poll_interval``; with ``once`` it is raised."""
    stop = stop or threading.Event()
    holder = holder or new_holder()
    lease = lease if lease is not None else worker_lease()
    stats = WorkerStats()
    deliverer = RowDeliverer(database, holder)
    try:
        while not stop.is_set():
            try:
                claimed_any = _poll(database, holder, batch, lease, deliverer, stats, stop)
            except DatabaseError as error:
                if once:
                    raise
                logger.warning("database error (%s: %s); retrying in %ss",
                               type(error).__name__, error, poll_interval)
                connections[database].close()
                claimed_any = False
            if not claimed_any:
                if once:
                    break
                stop.wait(poll_interval)
    finally:
        # If the database is gone, the claims return to the queue when their lease ends.
        with contextlib.suppress(DatabaseError):
            release(database, holder)
        deliverer.close()
    return stats


def _poll(
    database: str, holder: str, batch: int, lease: float, deliverer: RowDeliverer,
    stats: WorkerStats, stop: threading.Event,
) -> bool:
    """Take back expired leases, claim a batch and deliver it; whether any
    row was claimed."""
    for row in reclaim_expired(database, settle=deliverer.settle_stopped).stopped:
        signal = STATUS_SIGNALS.get(RowStatus(row.status))
        if signal is not None:
            send_signal(signal, OutboxMessage, row=row, status=str(row.status))
    claimed = claim(database, holder, batch, lease)
    for row in claimed:
        if stop.is_set():
            break
        status = deliverer.deliver(row, lease)
        stats.rows[str(status) if status is not None else "lost"] += 1
    return bool(claimed)


def run_workers(
    concurrency: int,
    database: str = "default",
    *,
    stop: threading.Event | None = None,
    **kwargs: object,
) -> WorkerStats:
    """``drain`` in ``concurrency`` threads (each with its own database
    connection and routers); returns their combined stats."""
    stop = stop or threading.Event()
    if concurrency <= 1:
        return drain(database, stop=stop, **kwargs)  # type: ignore[arg-type]
    results: list[WorkerStats] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            result = drain(database, stop=stop, **kwargs)  # type: ignore[arg-type]
            with lock:
                results.append(result)
        except BaseException as error:
            stop.set()
            with lock:
                errors.append(error)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=work, name=f"mailrouter-outbox-{n}", daemon=True)
        for n in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    total = WorkerStats()
    for result in results:
        total.add(result)
    return total
