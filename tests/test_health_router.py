"""Circuit breakers as the router uses them, under a controllable clock.

Mailers are the scripted in-process backends of tests/fakes.py, so each
attempt's result is exact; the clock only moves when a test advances it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.core.mail import EmailMessage

from mailrouter import signals
from mailrouter.backend import RouterBackend
from mailrouter.health.breaker import State
from mailrouter.health.monitor import HealthMonitor
from mailrouter.health.store import Drain, store_for
from mailrouter.outcomes import Outcome

from . import fakes
from .conftest import make_router
from .health_fixtures import COUNTING_CACHES, CountingCache, FakeClock

MAILERS = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
           for alias in ("a", "b", "c")}
HEALTH = {
    "failure_threshold": 3,
    "failure_rate": None,
    "cooldown": 10,
    "max_cooldown": 40,
    "clock": "tests.health_fixtures.CLOCK",
}


def options(
    health: dict[str, Any] | None = None, mailers: list[str] | None = None
) -> dict[str, Any]:
    return {"routes": [{"mailers": mailers or ["a", "b"]}], "health": {**HEALTH, **(health or {})}}


@pytest.fixture
def transitions() -> Iterator[list[tuple[str, str, str, str]]]:
    seen: list[tuple[str, str, str, str]] = []

    def receiver(sender: Any, alias: str, old: State, new: State, reason: str, **kw: Any) -> None:
        assert isinstance(kw["router"], RouterBackend)
        seen.append((alias, str(old), str(new), reason))

    signals.mailer_state_changed.connect(receiver)
    yield seen
    signals.mailer_state_changed.disconnect(receiver)


def send(router: RouterBackend, count: int = 1) -> list[EmailMessage]:
    batch = [EmailMessage(f"m{i}", "body", "app@example.com", ["u@example.com"])
             for i in range(count)]
    router.fail_silently = True
    router.send_messages(batch)
    return batch


def trail(message: EmailMessage) -> list[tuple[str, str]]:
    return [(a.alias, a.outcome.value) for a in message.mailrouter_attempts]  # type: ignore[attr-defined]


def refuse(alias: str, times: int) -> None:
    fakes.SCRIPTS[alias].extend(["refuse_connect"] * times)


def test_consecutive_failures_open_the_breaker_fleet_wide_and_skip_without_io(
    configure: Callable[..., RouterBackend], clock: FakeClock,
    transitions: list[tuple[str, str, str, str]],
) -> None:
    router = configure(MAILERS, options())
    refuse("a", 10)
    for _ in range(3):
        [message] = send(router)
        assert trail(message) == [("a", "not_sent"), ("b", "accepted")]
    assert fakes.OPEN_CALLS["a"] == 3
    assert [(t[0], t[1], t[2]) for t in transitions] == [("a", "closed", "open")]
    assert transitions[0][3].startswith("3 consecutive failures")

    # A new router instance (as Django makes per send_mail) sees the open breaker.
    [message] = send(make_router())
    assert trail(message) == [("a", "skipped"), ("b", "accepted")]
    assert message.mailrouter_attempts[0].error.startswith("circuit open until ")  # type: ignore[attr-defined]
    assert fakes.OPEN_CALLS["a"] == 3  # skipped: no I/O at all


def test_rejected_and_incompatible_never_count_against_a_mailer(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    router = configure(MAILERS, options())
    fakes.SCRIPTS["a"].extend(["reject", "incompatible"] * 4)
    for _ in range(8):
        send(router)
    [message] = send(router)
    assert trail(message) == [("a", "accepted")]


def test_a_success_ends_the_failure_streak(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    router = configure(MAILERS, options())
    fakes.SCRIPTS["a"].extend(["tempfail", "tempfail", "accept", "tempfail", "tempfail"])
    for _ in range(5):
        send(router)
    [message] = send(router)
    assert trail(message) == [("a", "accepted")]


def test_cooldown_then_one_probe_then_fail_back_to_the_primary(
    configure: Callable[..., RouterBackend], clock: FakeClock,
    transitions: list[tuple[str, str, str, str]],
) -> None:
    router = configure(MAILERS, options())
    refuse("a", 3)
    for _ in range(3):
        send(router)
    clock.advance(9.9)
    assert trail(send(router)[0]) == [("a", "skipped"), ("b", "accepted")]
    clock.advance(0.1)
    # The probe is an ordinary message; it succeeds, so the breaker closes.
    assert trail(send(router)[0]) == [("a", "accepted")]
    assert [(t[1], t[2]) for t in transitions] == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed"),
    ]
    # Fail-back: every new message goes to the primary again.
    assert all(trail(m) == [("a", "accepted")] for m in send(router, 5))


def test_exactly_one_prober_across_processes(configure: Callable[..., RouterBackend],
                                             clock: FakeClock) -> None:
    router = configure(MAILERS, options())
    refuse("a", 3)
    for _ in range(3):
        send(router)
    clock.advance(10)
    settings = router.config.health_settings
    # Two monitors on one store are two processes sharing one cache.
    first, second = HealthMonitor(settings), HealthMonitor(settings)
    first.begin_batch(["a", "b"])
    second.begin_batch(["a", "b"])
    assert first.skip_reason("a") is None  # holds the probe lease
    assert first.skip_reason("a") is None  # ... for its whole batch
    assert second.skip_reason("a") == "circuit half-open: another process is probing it"
    assert second.skip_reason("b") is None


def test_a_failed_probe_reopens_with_a_growing_capped_cooldown(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    router = configure(MAILERS, options())
    refuse("a", 100)
    for _ in range(3):
        send(router)
    store = store_for(router.config.health_settings)
    cooldowns = []
    for _ in range(4):
        breaker = store.load_breaker("a")
        assert breaker.retry_at is not None
        cooldowns.append(breaker.retry_at - clock.now)
        clock.advance(breaker.retry_at - clock.now)
        opens = fakes.OPEN_CALLS["a"]
        [message] = send(router)
        assert trail(message) == [("a", "not_sent"), ("b", "accepted")]  # the one probe
        assert fakes.OPEN_CALLS["a"] == opens + 1
    assert cooldowns == [10, 20, 40, 40]


def test_when_every_candidate_is_open_all_are_tried_in_order(
    configure: Callable[..., RouterBackend], clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = configure(MAILERS, options())
    refuse("a", 10)
    refuse("b", 10)
    for _ in range(3):
        send(router)
    assert store_for(router.config.health_settings).load_breaker("b").state is State.OPEN
    with caplog.at_level(logging.WARNING, logger="mailrouter"):
        [message] = send(router)
    assert trail(message) == [("a", "not_sent"), ("b", "not_sent")]
    overridden = [r for r in caplog.records if "out of rotation" in r.getMessage()]
    assert len(overridden) == 1 and "(candidates a, b)" in overridden[0].getMessage()
    # Each attempt says it was made despite the open breaker.
    assert all(str(a.last_resort).startswith("circuit open until")
               for a in message.mailrouter_attempts)  # type: ignore[attr-defined]  # fmt: skip


def test_failure_rate_over_the_window_opens_the_breaker(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    health = {"failure_threshold": None, "failure_rate": 0.5, "min_attempts": 6, "window": 60}
    router = configure(MAILERS, options(health))
    fakes.SCRIPTS["a"].extend(["tempfail", "accept"] * 10)
    outcomes = []
    for _ in range(8):
        [message] = send(router)
        outcomes.append(trail(message)[0])
        clock.advance(1)
    # fail, ok, fail, ok, fail, ok (6 attempts, 50 %): the 7th attempt fails → open.
    assert outcomes[:7] == [("a", "not_sent"), ("a", "accepted")] * 3 + [("a", "not_sent")]
    assert outcomes[7] == ("a", "skipped")


def test_old_failures_leave_the_window(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    health = {"failure_threshold": None, "failure_rate": 0.5, "min_attempts": 4, "window": 60}
    router = configure(MAILERS, options(health))
    fakes.SCRIPTS["a"].extend(["tempfail"] * 3)
    for _ in range(3):
        send(router)
    clock.advance(61)
    fakes.SCRIPTS["a"].extend(["accept", "tempfail", "accept", "accept", "tempfail"])
    for _ in range(5):
        send(router)
    [message] = send(router)
    assert trail(message) == [("a", "accepted")]  # 2 of 5 in the window: still closed


def test_a_drained_mailer_is_skipped_until_undrained(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    router = configure(MAILERS, options())
    store = store_for(router.config.health_settings)
    store.set_drain("a", Drain(clock.now, clock.now + 300, "maintenance"))
    [message] = send(router)
    assert trail(message) == [("a", "skipped"), ("b", "accepted")]
    assert "drained until" in message.mailrouter_attempts[0].error  # type: ignore[attr-defined]
    clock.advance(301)  # the drain has ended by itself
    assert trail(send(router)[0]) == [("a", "accepted")]
    store.set_drain("a", Drain(clock.now, None, "migration"))
    assert trail(send(router)[0])[0] == ("a", "skipped")
    store.clear_drain("a")
    assert trail(send(router)[0]) == [("a", "accepted")]


def test_steady_state_costs_one_cache_round_trip_per_send_messages(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    router = configure(MAILERS, options({"cache": "health", "failure_rate": 0.5}),
                       CACHES=COUNTING_CACHES)
    caches["health"].clear()
    CountingCache.CALLS.clear()
    for _ in range(10):
        send(router, 5)
    assert dict(CountingCache.CALLS) == {"get_many": 10}

    refuse("a", 3)
    for _ in range(3):
        send(router)
    assert CountingCache.writes() > 0  # failures and the transition are written

    # Open breaker: still one read per batch, no writes, no I/O on "a".
    CountingCache.CALLS.clear()
    for _ in range(10):
        messages = send(router, 5)
        assert all(trail(m) == [("a", "skipped"), ("b", "accepted")] for m in messages)
    assert dict(CountingCache.CALLS) == {"get_many": 10}


def test_an_unused_probe_lease_is_released(configure: Callable[..., RouterBackend],
                                           clock: FakeClock) -> None:
    router = configure(MAILERS, options(mailers=["b", "a"]))
    refuse("b", 3)
    fakes.SCRIPTS["a"].extend(["refuse_connect"] * 3)
    for _ in range(3):
        send(router)  # b fails, a ... also fails: both open
    clock.advance(10)
    settings = router.config.health_settings
    first = HealthMonitor(settings)
    first.begin_batch(["a", "b"])
    assert first.skip_reason("a") is None  # lease taken up front ...
    first.end_batch()  # ... but "a" was never attempted: the lease is given back
    second = HealthMonitor(settings)
    second.begin_batch(["a", "b"])
    assert second.skip_reason("a") is None


def test_a_pinned_alias_outside_the_routes_is_tracked_too(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    router = configure(MAILERS, options())
    refuse("c", 5)
    for _ in range(4):
        message = EmailMessage("m", "body", "app@example.com", ["u@example.com"])
        message.mailers = ["c", "b"]  # type: ignore[attr-defined]
        router.fail_silently = True
        router.send_messages([message])
    assert trail(message) == [("c", "skipped"), ("b", "accepted")]


class BrokenCache(CountingCache):
    """A cache whose server is down: every call raises."""

    def get_many(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Error 111 connecting to redis://:hunter2@10.0.0.9:6379")

    get = set = add = incr = delete = delete_many = get_many


def test_an_unreachable_cache_never_breaks_sending(
    configure: Callable[..., RouterBackend], clock: FakeClock, caplog: pytest.LogCaptureFixture,
) -> None:
    broken = {"default": COUNTING_CACHES["default"],
              "health": {"BACKEND": "tests.test_health_router.BrokenCache"}}
    router = configure(MAILERS, options({"cache": "health"}), CACHES=broken)
    refuse("a", 3)
    with caplog.at_level(logging.INFO, logger="mailrouter"):
        for _ in range(6):
            [message] = send(router)
    # Per-process breakers still work while the cache is down ...
    assert trail(message) == [("a", "skipped"), ("b", "accepted")]
    # ... and the outage is reported once, without the password in the URL.
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert "hunter2" not in caplog.text


def test_health_can_be_switched_off(configure: Callable[..., RouterBackend],
                                    clock: FakeClock) -> None:
    router = configure(MAILERS, {"routes": [{"mailers": ["a", "b"]}], "health": False})
    assert not router.config.health_settings.enabled
    # Twice the default failure_threshold (5): with health on, "a" would be skipped.
    refuse("a", 10)
    for _ in range(10):
        [message] = send(router)
        assert trail(message) == [("a", "not_sent"), ("b", "accepted")]
    assert fakes.TRIED["a"] == 10


def test_skipped_attempt_outcome_is_recorded_as_skipped(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    router = configure(MAILERS, options())
    refuse("a", 3)
    for _ in range(4):
        [message] = send(router)
    assert message.mailrouter_attempts[0].outcome is Outcome.SKIPPED  # type: ignore[attr-defined]


def test_a_reached_threshold_skips_even_before_the_open_record_is_stored(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    from mailrouter.health.store import LastError

    router = configure(MAILERS, options())
    settings = router.config.health_settings
    store = store_for(settings)
    # Another process counted the third failure and has not written "open" yet
    # (or died before it could).
    for _ in range(3):
        store.record_failure("a", settings.policy("a"), clock.now,
                             LastError(clock.now, "not_sent", "refused"))
    [message] = send(router)
    assert trail(message) == [("a", "skipped"), ("b", "accepted")]
    assert message.mailrouter_attempts[0].error == "circuit opening (3 consecutive failures)"  # type: ignore[attr-defined]
    # Bounded by the cooldown: if nobody stored the transition, try again.
    clock.advance(10)
    assert trail(send(router)[0]) == [("a", "accepted")]
    assert trail(send(router)[0]) == [("a", "accepted")]


def test_probe_lease_is_only_taken_for_a_mailer_actually_reached(
    configure: Callable[..., RouterBackend], clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mailrouter.health.store import HealthStore

    router = configure(MAILERS, options(mailers=["a", "b"]))
    refuse("b", 3)
    for _ in range(3):
        message = EmailMessage("pin", "body", "app@example.com", ["u@example.com"])
        message.mailers = ["b"]  # type: ignore[attr-defined]
        router.fail_silently = True
        router.send_messages([message])
    clock.advance(10)  # b is half-open now
    leases: list[str] = []
    original = HealthStore.acquire_probe

    def spy(self: HealthStore, alias: str, *args: Any, **kwargs: Any) -> bool:
        leases.append(alias)
        return original(self, alias, *args, **kwargs)

    monkeypatch.setattr(HealthStore, "acquire_probe", spy)
    [message] = send(router)
    assert trail(message) == [("a", "accepted")]
    assert leases == []  # b was never reached, so no process's probe was taken
    refuse("a", 1)
    [message] = send(router)
    assert trail(message) == [("a", "not_sent"), ("b", "accepted")]  # the probe
    assert leases == ["b"]
