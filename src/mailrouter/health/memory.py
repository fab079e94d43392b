"""Per-process breaker state: a small, fast cache for the embedded store and
the fallback used while the shared cache is unreachable.

Django's LocMemCache pickles every value and validates every key, which costs
a few microseconds per key; the hot path reads about ten keys per mailer for
every ``send_messages()``. This store keeps plain Python values under one lock
and implements only the cache operations ``HealthStore`` uses, with the same
semantics (``add`` only when missing, atomic ``incr`` raising ValueError for
a missing key, per-key expiry).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

#: Keep memory bounded even if aliases and buckets keep changing.
MAX_ENTRIES = 10_000


class ProcessMemory(BaseCache):
    """An in-process cache of plain values (no pickling: callers store
    immutable values or fresh dicts and never mutate what they read)."""

    def __init__(self) -> None:
        super().__init__({"TIMEOUT": None})
        self._data: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.Lock()

    def _expiry(self, timeout: Any) -> float | None:
        if timeout is DEFAULT_TIMEOUT or timeout is None:
            return None
        return time.monotonic() + float(timeout)

    def _live(self, key: str, now: float) -> tuple[Any, float | None] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= now:
            del self._data[key]
            return None
        return entry

    def _trim(self) -> None:
        if len(self._data) > MAX_ENTRIES:
            # Drop the oldest half; only ever reached with runaway key churn.
            for key in list(self._data)[: len(self._data) // 2]:
                del self._data[key]

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        with self._lock:
            entry = self._live(key, time.monotonic())
        return default if entry is None else entry[0]

    def get_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        now = time.monotonic()
        found: dict[str, Any] = {}
        with self._lock:
            for key in keys:
                entry = self._live(key, now)
                if entry is not None:
                    found[key] = entry[0]
        return found

    def set(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        with self._lock:
            self._data[key] = (value, self._expiry(timeout))
            self._trim()

    def add(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        with self._lock:
            if self._live(key, time.monotonic()) is not None:
                return False
            self._data[key] = (value, self._expiry(timeout))
            self._trim()
            return True

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        with self._lock:
            entry = self._live(key, time.monotonic())
            if entry is None:
                raise ValueError(f"Key '{key}' not found")
            value = int(entry[0]) + delta
            self._data[key] = (value, entry[1])
            return value

    def delete(self, key: str, version: int | None = None) -> bool:
        with self._lock:
            return self._data.pop(key, None) is not None

    def delete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
