"""Helpers for the health tests; their fixtures are in tests/conftest.py.

- ``CLOCK``: a controllable wall clock; routers use it through the health
  option ``"clock": "tests.health_fixtures.CLOCK"``.
- ``CountingCache``: a local-memory cache that counts calls (≈ round trips).
- ``redis_binary()``: the ``redis-server`` for ``RedisServer``
  (``mailrouter.testing.redis``), a real process on a free port. If the
  binary is missing the tests FAIL (with how to fix it) unless
  ``MAILROUTER_ALLOW_NO_REDIS=1`` is set, in which case they are skipped with
  that reason shown.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from typing import Any

import pytest
from django.core.cache.backends.locmem import LocMemCache

from mailrouter.testing.redis import RedisServer

START = 1_700_000_000.0


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CLOCK = FakeClock()

_COUNTED = (
    "get", "get_many", "set", "set_many", "add", "incr", "decr", "delete", "delete_many",
    "touch", "has_key", "clear",
)


class CountingCache(LocMemCache):
    """LocMemCache that counts top-level calls per method in ``CALLS``.

    Calls made by another counted method (BaseCache.get_many calls get) are
    not counted again: each counted call is one round trip on a networked cache.
    """

    CALLS: Counter[str] = Counter()
    _depth = threading.local()

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name not in _COUNTED:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(CountingCache._depth, "value", 0)
            if depth == 0:
                CountingCache.CALLS[name] += 1
            CountingCache._depth.value = depth + 1
            try:
                return attribute(*args, **kwargs)
            finally:
                CountingCache._depth.value = depth

        return counted

    @classmethod
    def total(cls) -> int:
        return sum(cls.CALLS.values())

    @classmethod
    def writes(cls) -> int:
        return sum(n for name, n in cls.CALLS.items() if name not in ("get", "get_many", "has_key"))


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = (
            "redis-server is not installed: the health tests need a real Redis "
            "(apt-get install redis-server). Set MAILROUTER_ALLOW_NO_REDIS=1 to skip them."
        )
        if os.environ.get("MAILROUTER_ALLOW_NO_REDIS") == "1":
            pytest.skip(message)
        pytest.fail(message)
    try:
        import redis  # noqa: F401
    except ImportError:
        pytest.fail("the 'redis' package is not installed (pip install redis)")
    return binary


#: The Redis cache backends the health store supports: Django's own, and
#: django-redis (its options are upper-case).
REDIS_BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "django": (
        "django.core.cache.backends.redis.RedisCache",
        {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    ),
    "django-redis": (
        "django_redis.cache.RedisCache",
        {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    ),
}


def redis_caches(server: RedisServer, backend: str = "django") -> dict[str, Any]:
    path, options = REDIS_BACKENDS[backend]
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "health": {"BACKEND": path, "LOCATION": server.url, "OPTIONS": options},
    }


COUNTING_CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "health": {"BACKEND": "tests.health_fixtures.CountingCache", "LOCATION": "health-counting"},
}
