"""A shared cache with a per-process fallback.

While the shared cache (Redis, memcached, …) raises, every operation runs
against per-process state instead; a warning is logged at most once per
``WARN_INTERVAL``; the shared cache is tried again after ``RETRY_INTERVAL``
and used as soon as it answers. Sending never fails because of a cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger("mailrouter")

#: Seconds between two "unreachable" warnings of one fallback.
WARN_INTERVAL = 60.0
#: Seconds to use the per-process fallback before trying the shared cache again.
#: Keeps a hanging cache server from costing its timeout on every batch.
RETRY_INTERVAL = 5.0

R = TypeVar("R")
T = TypeVar("T")


class CacheFallback(Generic[R]):
    """Runs operations on a shared resource (``shared()``: the Django cache
    of this thread, say), or on the per-process ``local`` stand-in while the
    shared one fails. Thread-safe.

    ``what`` names the shared resource in logs (``"health cache"``),
    ``meanwhile`` says what happens while it fails (``"using per-process
    breaker state"``), ``resumed`` what happens once it answers again (None:
    nothing is logged then).
    """

    def __init__(
        self, shared: Callable[[], R], local: R, *, what: str, label: str,
        cache_alias: str | None, meanwhile: str, resumed: str | None = None,
    ) -> None:
        self.shared = shared
        self.local = local
        self.what = what
        self.label = label
        self.cache_alias = cache_alias
        self._meanwhile = meanwhile
        self._resumed = resumed
        self._lock = threading.Lock()
        self._failed_at: float | None = None  # monotonic; None = shared in use
        self._warned_at: float | None = None

    def run(self, operation: Callable[[R], T]) -> T:
        """``operation(shared())``, or ``operation(local)`` while the shared
        resource fails (any exception: cache clients raise their own error
        types, and none of them may stop a send)."""
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() < failed_at + RETRY_INTERVAL:
            return operation(self.local)
        try:
            result = operation(self.shared())
        except Exception as error:
            self.failed(error)
            return operation(self.local)
        if failed_at is not None:
            self._answered()
        return result

    def failed(self, error: Exception) -> None:
        """Use the fallback for ``RETRY_INTERVAL``; warn (throttled)."""
        now = time.monotonic()
        with self._lock:
            self._failed_at = now
            if self._warned_at is not None and now - self._warned_at < WARN_INTERVAL:
                return
            self._warned_at = now
        logger.warning(
            "%s %s is unreachable (%s); %s until it answers again",
            self.what, self.label, type(error).__name__, self._meanwhile,
            extra={"mailrouter_cache": self.cache_alias},
        )

    def _answered(self) -> None:
        with self._lock:
            if self._failed_at is None:
                return
            self._failed_at = None
        if self._resumed is not None:
            logger.info(
                "%s %s answers again; %s", self.what, self.label, self._resumed,
                extra={"mailrouter_cache": self.cache_alias},
            )

    def forget(self) -> None:
        """Try the shared resource at once; warn again on its next failure."""
        with self._lock:
            self._failed_at = None
            self._warned_at = None
