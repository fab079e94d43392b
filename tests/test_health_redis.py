"""Breakers in a real Redis, through Django's RedisCache and through django-redis.

The suite starts its own ``redis-server``; these tests kill and restart it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.core.mail import EmailMessage

from mailrouter.backend import RouterBackend
from mailrouter.health import store as health_store
from mailrouter.health.breaker import State
from mailrouter.health.store import Drain, store_for
from mailrouter.shared_state import fallback
from mailrouter.testing.redis import RedisServer

from . import fakes
from .conftest import make_router
from .health_fixtures import REDIS_BACKENDS, FakeClock, redis_caches

MAILERS = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
           for alias in ("a", "b")}
OPTIONS = {
    "routes": [{"mailers": ["a", "b"]}],
    "health": {"cache": "health", "failure_threshold": 3, "failure_rate": 0.5,
               "cooldown": 10, "clock": "tests.health_fixtures.CLOCK"},
}


@pytest.fixture(params=list(REDIS_BACKENDS))
def router(configure: Callable[..., RouterBackend], redis: RedisServer,
           clock: FakeClock, request: pytest.FixtureRequest) -> RouterBackend:
    return configure(MAILERS, OPTIONS, CACHES=redis_caches(redis, request.param))


def send(router: RouterBackend, count: int = 1) -> list[EmailMessage]:
    batch = [EmailMessage("s", "b", "app@example.com", ["u@example.com"]) for _ in range(count)]
    router.fail_silently = True
    router.send_messages(batch)
    return batch


def first_attempt(message: EmailMessage) -> tuple[str, str]:
    attempt = message.mailrouter_attempts[0]  # type: ignore[attr-defined]
    return attempt.alias, attempt.outcome.value


def redis_client(server: RedisServer) -> Any:
    import redis

    return redis.Redis.from_url(server.url)


def test_an_open_breaker_is_seen_by_a_fresh_process(router: RouterBackend) -> None:
    fakes.SCRIPTS["a"].extend(["refuse_connect"] * 3)
    for _ in range(3):
        send(router)
    health_store.reset_stores()  # forget everything this process knew, as a new process would
    assert store_for(router.config.health_settings).load_breaker("a").state is State.OPEN
    assert first_attempt(send(make_router())[0]) == ("a", "skipped")


def test_steady_state_is_one_mget_per_batch_in_redis(router: RouterBackend,
                                                     redis: RedisServer) -> None:
    client = redis_client(redis)
    send(router)  # connect once
    client.config_resetstat()
    for _ in range(20):
        send(router, 5)
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    calls.pop("info", None)
    calls.pop("config|resetstat", None)
    assert calls == {"mget": 20}


def test_the_probe_lease_is_taken_by_exactly_one_of_many_racers(router: RouterBackend) -> None:
    store = store_for(router.config.health_settings)
    barrier = threading.Barrier(16)
    won: list[bool] = []

    def race() -> None:
        barrier.wait()
        won.append(store.acquire_probe("a", 7, threading.current_thread().name, 30))

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 15 + [True]


def test_concurrent_failures_are_all_counted(router: RouterBackend, clock: FakeClock) -> None:
    from mailrouter.health.store import LastError

    store = store_for(router.config.health_settings)
    policy = router.config.health_settings.policy("a")
    barrier = threading.Barrier(20)
    results: list[int] = []

    def fail() -> None:
        barrier.wait()
        results.append(store.record_failure("a", policy, clock.now,
                                            LastError(clock.now, "not_sent", "x"))[0])

    threads = [threading.Thread(target=fail) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 21))  # atomic incr: no lost update


def test_redis_killed_mid_run_then_restarted(
    router: RouterBackend, redis: RedisServer, clock: FakeClock,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert all(m.sent_using == "a" for m in send(router, 3))  # type: ignore[attr-defined]
    redis.stop()
    with caplog.at_level(logging.INFO, logger="mailrouter"):
        # Sending goes on; breakers keep working with per-process state.
        fakes.SCRIPTS["a"].extend(["refuse_connect"] * 3)
        during = [m for _ in range(10) for m in send(router, 2)]
        assert all(m.mailrouter_status == "sent" for m in during)  # type: ignore[attr-defined]
        assert first_attempt(during[-1]) == ("a", "skipped")
        unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(unreachable) == 1  # at most once per interval

        redis.start()
        monkeypatch.setattr(fallback, "RETRY_INTERVAL", 0.0)
        store = store_for(router.config.health_settings)
        # Shared state again: what another process stores is what this one acts on.
        store.set_drain("b", Drain(clock.now, None, "maintenance"))
        [message] = send(router)
        assert "answers again" in caplog.text
    # The restarted Redis is empty: "a" is closed there, "b" is drained there.
    assert first_attempt(message) == ("a", "accepted")
    assert store.load_breaker("a").state is State.CLOSED
    assert redis_client(redis).dbsize() > 0
