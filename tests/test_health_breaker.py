"""The breaker policy: pure transitions over immutable values, plain numbers for time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailrouter.health.breaker import (
    WINDOW_BUCKETS,
    Breaker,
    BreakerPolicy,
    State,
    WindowCounts,
    pack,
    unpack,
)

POLICY = BreakerPolicy(failure_threshold=3, window=60, failure_rate=0.5, min_attempts=10,
                       cooldown=30, max_cooldown=240)


def test_closed_until_the_threshold_or_the_rate() -> None:
    assert POLICY.trip_reason(2, WindowCounts(2, 2)) is None  # too few attempts for a rate
    assert POLICY.trip_reason(3, WindowCounts()) == "3 consecutive failures"
    assert POLICY.trip_reason(0, WindowCounts(4, 10)) is None
    assert POLICY.trip_reason(0, WindowCounts(5, 10)) == "failure rate 50% (5/10) over 60s"
    off = BreakerPolicy(failure_threshold=None, failure_rate=None)
    assert off.trip_reason(1000, WindowCounts(1000, 1000)) is None


def test_open_then_half_open_when_the_cooldown_ends() -> None:
    opened = POLICY.open(Breaker(), 1000.0, "3 consecutive failures")
    assert (opened.state, opened.openings, opened.retry_at, opened.generation) == (
        State.OPEN, 1, 1030.0, 1)
    assert opened.effective(1029.9) is State.OPEN
    assert opened.effective(1030.0) is State.HALF_OPEN
    closed = POLICY.close(opened, 1031.0, "probe succeeded")
    assert (closed.state, closed.openings, closed.retry_at, closed.generation) == (
        State.CLOSED, 0, None, 2)
    assert closed.effective(10**12) is State.CLOSED


def test_failed_probes_double_the_cooldown_up_to_the_cap() -> None:
    breaker, now, cooldowns = Breaker(), 0.0, []
    for _ in range(6):
        breaker = POLICY.open(breaker, now, "failed")
        assert breaker.retry_at is not None
        cooldowns.append(breaker.retry_at - now)
        now = breaker.retry_at
    assert cooldowns == [30, 60, 120, 240, 240, 240]
    # Closing resets the growth.
    again = POLICY.open(POLICY.close(breaker, now, "ok"), now, "failed")
    assert again.retry_at == now + 30


@given(st.integers(min_value=0, max_value=10**6))
def test_cooldown_is_monotonic_and_capped(openings: int) -> None:
    assert POLICY.cooldown <= POLICY.cooldown_for(openings) <= POLICY.max_cooldown
    assert POLICY.cooldown_for(openings) <= POLICY.cooldown_for(openings + 1)


@given(st.lists(st.sampled_from(["open", "close"]), max_size=30),
       st.lists(st.floats(min_value=0, max_value=1e4), min_size=30, max_size=30))
def test_generation_grows_by_one_per_transition(steps: list[str], gaps: list[float]) -> None:
    breaker, now = Breaker(), 0.0
    for step, gap in zip(steps, gaps, strict=False):
        now += gap
        following = (POLICY.open if step == "open" else POLICY.close)(breaker, now, step)
        assert following.generation == breaker.generation + 1
        assert following.since == now
        breaker = following
        assert Breaker.from_dict(breaker.to_dict()) == breaker  # survives the cache


@pytest.mark.parametrize("stored", [None, "garbage", {"state": "exploded"}, {"generation": "x"}])
def test_unreadable_records_are_a_fresh_closed_breaker(stored: object) -> None:
    assert Breaker.from_dict(stored) == Breaker()


@given(st.integers(min_value=0, max_value=2**31), st.integers(min_value=0, max_value=2**31))
def test_window_buckets_pack_two_counters(failures: int, attempts: int) -> None:
    assert unpack(pack(failures, attempts)) == (failures, attempts)
    assert unpack(pack(failures, attempts) + pack(1, 1)) == (failures + 1, attempts + 1)


@given(st.floats(min_value=0, max_value=4e9))
def test_the_window_ends_at_now(now: float) -> None:
    buckets = POLICY.window_buckets(now)
    assert len(buckets) == WINDOW_BUCKETS and buckets[-1] == POLICY.bucket(now)
    assert POLICY.bucket(now + POLICY.window) > buckets[-1] + WINDOW_BUCKETS - 2
