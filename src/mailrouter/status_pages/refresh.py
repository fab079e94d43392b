"""Refresh a status page: fetch it, store what it says, announce changes.

Who fetches: at most one process in the fleet per page per refresh interval,
the one that takes the page's lease (``cache.add`` with the interval as its
TTL; the lease is not released, so it also spaces fetches out). The command
``mailrouter refresh-status`` and webhook hints fetch without the lease
(``force``).

Who announces: a change of state is logged and signalled by the one process
that claims it (``cache.add`` on previous-record + new-state), so once per
change per fleet.

The background refresher is one daemon thread per process, started on the
first request; the send path only puts a page on its queue (no I/O, no
waiting), at most once per ``REQUEST_INTERVAL`` per page.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..health.sources import EFFECTS, SourceStore
from ..report import mailer_status_changed
from ..shared_state.holder import holder_id
from ..shared_state.registry import on_reset
from .fetch import FetchError
from .record import PageRecord, PageState, change_part, lease_part
from .settings import StatusPage
from .sources import UnexpectedDocument

logger = logging.getLogger("mailrouter")

Clock = Callable[[], float]
#: (page, store, clock, force) queued for the background refresher.
Job = tuple[StatusPage, SourceStore, Clock, bool]
#: Seconds between two refresh requests for one page from one process.
REQUEST_INTERVAL = 1.0
#: How long records stay in the cache past their staleness (for ``status``).
KEEP_FOR = 86400
CHANGE_CLAIM_TTL = 3600


def read_page(page: StatusPage, previous: PageRecord | None, now: float) -> PageRecord:
    """Fetch and read ``page`` (no cache involved): the record to store."""
    etag = previous.etag if previous is not None and previous.url == page.url else None
    last_good = previous if previous is not None and previous.url == page.url else None
    fetched_at = last_good.fetched_at if last_good is not None else None
    try:
        result = page.source.fetch(page.url, page.components, timeout=page.timeout, etag=etag,
                                   allow_http=page.allow_http)
        if result.not_modified:
            if last_good is None or last_good.state is PageState.UNKNOWN:
                raise FetchError("HTTP 304 without a previous reading")
            return PageRecord(
                last_good.state, now, last_good.worst, now, None, last_good.etag, page.url
            )
        reading = page.source.read(result.document, page.components)
    except (FetchError, UnexpectedDocument) as error:
        worst = last_good.worst if last_good is not None else ""
        return PageRecord(PageState.UNKNOWN, now, worst, fetched_at, str(error), None, page.url)
    except Exception as error:  # a user's source class failing
        text = f"source {type(page.source).__name__} raised {type(error).__name__}"
        return PageRecord(PageState.UNKNOWN, now, "", fetched_at, text, None, page.url)
    return PageRecord(
        reading.level, now, reading.worst, now, None, result.etag, page.url
    )


def refresh_page(
    page: StatusPage, store: SourceStore, clock: Clock, *, force: bool = False
) -> PageRecord | None:
    """Fetch ``page`` now if this process takes its lease (always when
    ``force``), store the record, announce a change. None: someone else has it."""
    alias = page.alias
    lease_ttl = max(1, math.floor(page.refresh))
    if not force and not store.add_value(alias, lease_part(page), holder_id(), lease_ttl):
        return None
    previous = PageRecord.from_dict(store.get_value(alias, page.record_part))
    record = read_page(page, previous, clock())
    ttl = math.ceil(page.stale_after) + KEEP_FOR
    store.set_value(alias, page.record_part, record.to_dict(), ttl)
    old = previous.state if previous is not None and previous.url == page.url else None
    if record.state is not old and (old is not None or record.state is not PageState.UNKNOWN):
        since = previous.checked_at if previous is not None else 0.0
        if store.add_value(alias, change_part(page, since, record.state), holder_id(),
                           CHANGE_CLAIM_TTL):
            announce(page, old or PageState.UNKNOWN, record)
    return record


def announce(page: StatusPage, old: PageState, record: PageRecord) -> None:
    new = record.state
    why = record.error if new is PageState.UNKNOWN else record.worst
    text = f"status page {page.host}: {why}" if why else f"status page {page.host}"
    effect = EFFECTS[new]
    level = logging.WARNING if new in (PageState.DOWN, PageState.UNKNOWN) else logging.INFO
    logger.log(
        level, "mailer %s status page %s → %s: %s; %s",
        page.alias, old.value, new.value, why or "-", effect,
        extra={"mailrouter_alias": page.alias, "mailrouter_page_state": new.value},
    )
    mailer_status_changed(type(page.source), page.alias, old, new, text)


class BackgroundRefresher:
    """One daemon thread per process that refreshes pages on request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        #: (alias, record part) → when it was last queued (monotonic).
        self._requested: dict[tuple[str, str], float] = {}
        self._pending = 0

    def request(
        self, page: StatusPage, store: SourceStore, clock: Clock, *, force: bool = False
    ) -> None:
        """Queue a refresh of ``page`` (cheap; never waits, never does I/O).
        ``force``: fetch without the refresh lease, however recently asked
        (a webhook hint, already rate-limited fleet-wide)."""
        now = time.monotonic()
        slot = (page.alias, page.record_part)
        last = self._requested.get(slot)
        if (not force and last is not None and now - last < REQUEST_INTERVAL
                and self._pid == os.getpid()):
            return
        with self._lock:
            if self._pid != os.getpid():
                # A forked child (preloading servers) has the parent's state but no thread.
                self._queue = queue.SimpleQueue()
                self._thread = None
                self._pending = 0
                self._requested.clear()
                self._pid = os.getpid()
            self._requested[slot] = now
            self._pending += 1
            self._queue.put((page, store, clock, force))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name="mailrouter-status-pages",
                    daemon=True,
                )
                self._thread.start()

    def _run(self, jobs: queue.SimpleQueue[Job]) -> None:
        while True:
            page, store, clock, force = jobs.get()
            try:
                refresh_page(page, store, clock, force=force)
            except Exception:  # never let the thread die: later pages still need it
                logger.exception("refreshing the status page of %s failed", page.alias)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued refresh is done (for tests and shutdown)."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending <= 0, timeout)

    def forget(self) -> None:
        """Forget request times (tests): the next request queues at once."""
        self._requested.clear()


refresher = BackgroundRefresher()
on_reset("mailrouter.status_pages.refresh", refresher.forget)


def schedule(page: StatusPage, store: SourceStore, clock: Clock) -> None:
    refresher.request(page, store, clock)


def refresh_now(
    pages: dict[str, StatusPage], store: SourceStore, clock: Clock, aliases: Any = None
) -> dict[str, PageRecord]:
    """Fetch pages now, in this thread (the command, cron): alias → record."""
    chosen = pages if not aliases else {a: p for a, p in pages.items() if a in aliases}
    records = {}
    for alias, page in chosen.items():
        record = refresh_page(page, store, clock, force=True)
        assert record is not None
        records[alias] = record
    return records
