"""Pytest fixtures of the health tests, loaded by their ``pytest_plugins``.

- ``clock``: the controllable clock ``CLOCK``, reset to ``START``;
- a fresh per-process health state and call counters for every test (autouse);
- ``redis_server`` (session) / ``redis`` (per test, emptied and running).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailrouter.health import store as health_store

from .health_fixtures import CLOCK, START, CountingCache, FakeClock, RedisServer, redis_binary


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    CLOCK.now = START
    yield CLOCK
    CLOCK.now = START


@pytest.fixture(autouse=True)
def _fresh_health_state() -> Iterator[None]:
    health_store.reset_stores()
    CountingCache.CALLS.clear()
    yield
    health_store.reset_stores()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(redis_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, emptied, and running again after the test."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    yield redis_server
    if redis_server.process is None:
        redis_server.start()
