"""Router option ``rate_limits``: budgets per mailer, per process or shared
through Redis; an exhausted budget skips to the next candidate (recorded, not
a health failure) or waits up to ``max_wait``; never a lost message. A limit
of N per period admits at most N in any window of the period (up to N at
once); tokens are taken per attempt, so a killed process strands none, and a
refund goes only to the storage that lent the token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter import ratelimit
from mailrouter.errors import ConfigurationError, DeliveryError
from mailrouter.health.store import store_for
from mailrouter.outcomes import MessageStatus, Outcome
from mailrouter.ratelimit import MemoryStorage, RateLimit, RedisStorage, parse_rate, storage_for
from mailrouter.testing.redis import RedisServer
from mailrouter.testing.settings import router_settings

from . import fakes
from .conftest import examples, make_router
from .health_fixtures import redis_caches
from .invariants import worst_window
from .messages import send_first_to_rest_pinned
from .test_command import run

ROOT = Path(__file__).resolve().parent.parent
SCRIPTED = "tests.fakes.ScriptedBackend"
MAILERS = {alias: {"BACKEND": SCRIPTED, "OPTIONS": {"name": alias}} for alias in ("a", "b")}


@pytest.fixture(autouse=True)
def _fresh_budgets() -> Any:
    ratelimit.reset_storages()
    yield
    ratelimit.reset_storages()


def msg(subject: str = "Hi") -> EmailMessage:
    return EmailMessage(subject, "Body", "app@example.com", ["u@example.com"])


def options(**extra: Any) -> dict[str, Any]:
    return {"routes": [{"mailers": ["a", "b"]}], **extra}


def trail(message: EmailMessage) -> list[tuple[str, str]]:
    return [(a.alias, a.outcome.value) for a in message.mailrouter_attempts]  # type: ignore[attr-defined]


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [("14/s", 14, 1.0), ("1000/m", 1000, 60.0), ("50000/h", 50000, 3600.0),
     ("100/d", 100, 86400.0), ("10/5s", 10, 5.0), (" 3 / M ", 3, 60.0)],
)  # fmt: skip
def test_rates_parse(text: str, count: int, period: float) -> None:
    limit = parse_rate(text)
    assert limit is not None and (limit.count, limit.period) == (count, period)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"rate_limits": {"a": "fast"}}, "'rate_limits'['a'] must be a rate such as '14/s'"),
        ({"rate_limits": {"a": "0/s"}}, "'rate_limits'['a'] must be a rate"),
        ({"rate_limits": {"a": 14}}, "'rate_limits'['a'] must be a rate"),
        ({"rate_limits": {"nope": "1/s"}}, "'rate_limits' names 'nope'"),
        ({"rate_limits": ["a"]}, "'rate_limits' must be a dict"),
        ({"max_wait": -1}, "'max_wait' must be a number of seconds ≥ 0"),
        ({"max_wait": "10"}, "'max_wait' must be"),
    ],
)
def test_bad_rate_limit_settings_fail_at_startup(value: dict[str, Any], expected: str) -> None:
    settings = router_settings(MAILERS, options(**value))
    with settings, pytest.raises(ConfigurationError) as raised:
        make_router()
    assert expected in str(raised.value)


# -- the strategy, per process -------------------------------------------------------------


def test_a_window_grants_in_part_then_says_when_the_next_token_comes() -> None:
    storage = MemoryStorage()
    limit = RateLimit(10, 3600.0, "10/h")
    first = storage.reserve("x", limit, 7)
    assert (first.granted, first.retry_after, first.used) == (7, 0.0, 7)
    second = storage.reserve("x", limit, 7)
    assert second.granted == 3 and second.used == 10
    # The first tokens leave the window one period (plus at most one slice) later.
    assert 3600 < second.retry_after <= 3600 * (1 + 1 / ratelimit.BUCKETS)
    assert storage.reserve("x", limit, 1).granted == 0
    # A token given back to its slice can be reserved again.
    again = storage.reserve("x", limit, 1, refund=1, refund_at=second.bucket)
    assert again.granted == 1


def test_a_slice_is_rounded_up_so_the_window_never_spans_less_than_the_period() -> None:
    limit = parse_rate("3/7s")
    assert limit is not None and limit.bucket_us * ratelimit.BUCKETS >= 7_000_000


def test_exhausted_budget_overflows_to_the_next_candidate_without_health_damage() -> None:
    with router_settings(MAILERS, options(rate_limits={"a": "3/h"},
                                          max_wait=0)):
        batch = [msg(f"m{i}") for i in range(5)]
        assert make_router().send_messages(batch) == 5
        later = msg("later")
        make_router().send_messages([later])
        router = make_router()
        health = store_for(router.config.health_settings).read(
            ["a"], router.config.health_settings.policy, router.config.health_settings.clock()
        )["a"]
    assert [m.sent_using for m in batch] == ["a", "a", "a", "b", "b"]  # type: ignore[attr-defined]
    assert trail(batch[3]) == [("a", "skipped"), ("b", "accepted")]
    reason = batch[3].mailrouter_attempts[0].error  # type: ignore[attr-defined]
    assert reason.startswith("rate limit 3/h reached; budget again in ")
    assert trail(later) == [("a", "skipped"), ("b", "accepted")]
    assert fakes.TRIED["a"] == 3  # no request was made for a skipped attempt
    assert health.consecutive == 0 and health.last_error is None


def test_out_of_budget_everywhere_fails_the_message_with_its_attempts_never_silently() -> None:
    limits = {"a": "2/h", "b": "1/h"}
    with router_settings(MAILERS, options(rate_limits=limits, max_wait=0)):
        batch = [msg(f"m{i}") for i in range(5)]
        with pytest.raises(DeliveryError) as raised:
            make_router().send_messages(batch)
    assert raised.value.sent == 3
    failed = [f.message for f in raised.value.failures]
    assert failed == batch[3:]
    for message in failed:
        assert message.mailrouter_status is MessageStatus.FAILED  # type: ignore[attr-defined]
        assert trail(message) == [("a", "skipped"), ("b", "skipped")]
    assert "rate limit 1/h reached" in str(raised.value)


def test_max_wait_waits_for_budget_instead_of_failing() -> None:
    # 40 tokens at once, then one every 25 ms: the last 5 messages wait.
    limits = {"a": "40/s", "b": "1/h"}
    with router_settings(MAILERS, options(rate_limits=limits, max_wait=5)):
        batch = [msg(f"m{i}") for i in range(46)]
        assert make_router().send_messages(batch) == 46
    assert [m.sent_using for m in batch].count("a") == 45  # type: ignore[attr-defined]
    assert all(a.outcome is not Outcome.SKIPPED or a.alias == "a"
               for m in batch for a in m.mailrouter_attempts)  # type: ignore[attr-defined]  # fmt: skip


def test_concurrent_workers_share_the_budget() -> None:
    opts = options(rate_limits={"a": "25/h"}, max_wait=0, concurrency=4)
    with router_settings(MAILERS, opts):
        batch = [msg(f"m{i}") for i in range(60)]
        assert make_router().send_messages(batch) == 60
    assert [m.sent_using for m in batch].count("a") == 25  # type: ignore[attr-defined]


def test_a_batch_takes_budget_only_for_messages_that_reach_the_mailer() -> None:
    """One message through "a", nine pinned to "b": while the nine are sent,
    "a" has lent one token, not ten (other processes may use the rest)."""
    use_seen: list[int] = []

    def sampled(message: EmailMessage, **kwargs: Any) -> None:
        limit = make_router().config.rate_limits["a"]
        use_seen.append(ratelimit.current_use("a", limit, storage_for(None)))

    with router_settings(MAILERS, options(rate_limits={"a": "100/h"})):
        batch = [msg(f"m{i}") for i in range(10)]
        send_first_to_rest_pinned(make_router(), batch, "b", sampled)
        assert use_seen == [1] * 10
        code, out = run("status")
        assert code == 0 and "1/100 used (100/h)" in out
        code, out = run("status", "--json")
        row = next(r for r in json.loads(out)["mailers"] if r["alias"] == "a")
        assert (row["rate_used"], row["rate_limit"]) == (1, "100/h")


# -- shared through Redis -------------------------------------------------------------------


def test_redis_budget_is_shared_by_routers_and_costs_one_command_per_attempt(
    redis: RedisServer,
) -> None:
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    limits = {"a": "30/h"}
    opts = options(rate_limits=limits, max_wait=0, health={"cache": "health"})
    with override_settings(CACHES=redis_caches(redis)), router_settings(MAILERS, opts):
        assert isinstance(storage_for("health"), ratelimit.FallbackStorage)
        client.script_load(ratelimit.WINDOW_SCRIPT)  # as after the first use
        client.config_resetstat()
        first = [msg(f"x{i}") for i in range(20)]
        make_router().send_messages(first)
        stats = client.info("commandstats")
        evals = sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0)
                    for name in ("evalsha", "eval"))  # fmt: skip
        # Another router instance (as in another process) sees the budget left.
        second = [msg(f"y{i}") for i in range(20)]
        make_router().send_messages(second)
    assert evals == 20  # one token per attempt, taken right before it; none given back
    sent_a = [m.sent_using for m in first + second].count("a")  # type: ignore[attr-defined]
    assert sent_a == 30
    assert [m.sent_using for m in second].count("b") == 10  # type: ignore[attr-defined]
    # Once "a" is found empty, the overflowing messages cost no round trip.
    assert sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0)
               for name in ("evalsha", "eval")) == 20  # fmt: skip
    assert any(key.startswith(b":1:mailrouter:ratewin:") for key in client.keys("*"))


def test_redis_storage_is_atomic_across_processes(redis: RedisServer, tmp_path: Path) -> None:
    """Four processes race for 40 tokens of one mailer: exactly 40 messages
    go through it, every other one overflows, none is lost."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    start = tmp_path / "start"
    config = {"redis": redis.url, "rate_limits": {"primary": "40/h"},
              "messages": 30,
              "batch": 3, "concurrency": 2, "start": str(start)}  # fmt: skip
    processes = [
        subprocess.Popen([sys.executable, "-m", "tests.ratelimit_worker", json.dumps(config)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]  # fmt: skip
    start.touch()
    totals: dict[str, int] = {}
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
        for alias, count in json.loads(out.decode().strip().splitlines()[-1]).items():
            totals[alias] = totals.get(alias, 0) + count
    assert totals == {"primary": 40, "backup": 80}


def test_redis_down_limits_per_process_and_keeps_sending(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    opts = options(rate_limits={"a": "4/h"}, max_wait=0,
                   health={"cache": "health"})
    with override_settings(CACHES=redis_caches(redis)), router_settings(MAILERS, opts):
        redis.stop()
        batch = [msg(f"m{i}") for i in range(6)]
        assert make_router().send_messages(batch) == 6
    assert [m.sent_using for m in batch].count("a") == 4  # type: ignore[attr-defined]
    assert "rate-limit storage CACHES['health'] is unreachable" in caplog.text


def test_redis_script_and_memory_strategy_agree(redis: RedisServer) -> None:
    limit = RateLimit(5, 3600.0, "5/h")
    with override_settings(CACHES=redis_caches(redis)):
        shared = RedisStorage("health")
        local = MemoryStorage()
        for wanted, refund in [(2, 0), (2, 0), (4, 0), (0, 3), (9, 0), (0, 0)]:
            a = shared.reserve("k", limit, wanted, refund)
            b = local.reserve("k", limit, wanted, refund)
            assert (a.granted, a.used) == (b.granted, b.used)
            # Slices start at different moments on the two clocks.
            assert abs(a.retry_after - b.retry_after) <= limit.bucket_us / 1_000_000


def test_system_check_warns_when_budgets_are_per_process(redis: RedisServer) -> None:
    from django.core import checks

    def warnings() -> list[str]:
        return [m.msg for m in checks.run_checks() if m.id == "mailrouter.W105"]

    with override_settings(DEBUG=False, CACHES=redis_caches(redis)):
        with router_settings(MAILERS, options(rate_limits={"a": "14/s"})):
            [text] = warnings()
            assert "'rate_limits' are kept in the embedded default" in text and "a 14/s" in text
        shared = options(rate_limits={"a": "14/s"}, health={"cache": "health"})
        with router_settings(MAILERS, shared):
            assert warnings() == []


@settings(max_examples=examples(300), deadline=None)
@given(
    count=st.integers(1, 20),
    period=st.sampled_from([1.0, 60.0, 3600.0]),
    steps=st.lists(st.tuples(st.integers(0, 25), st.floats(0, 0.6), st.booleans()),
                   min_size=1, max_size=40),
)  # fmt: skip
def test_the_window_admits_at_most_n_in_any_window_of_the_period(
    count: int, period: float, steps: list[tuple[int, float, bool]]
) -> None:
    """Whatever is asked when (and given back): in any window of one period
    at most ``count`` tokens are kept; a window that held nothing for a whole
    period grants in full, up to ``count`` at once; and when fewer are
    granted than wanted, the next token comes at ``retry_after``, not later."""
    limit = RateLimit(count, period, f"{count}/{period:g}s")
    span = round(period * 1_000_000)
    now = 10**12
    counts: dict[int, int] = {}
    kept: list[int] = []
    for wanted, advance, give_back in steps:
        now += round(advance * span)
        quiet = all(moment <= now - span - limit.bucket_us for moment in kept)
        reservation = ratelimit._window(counts, now, limit, wanted, 0, 0)
        kept += [now] * reservation.granted
        assert 0 <= reservation.granted <= wanted
        assert 0 <= reservation.used <= count
        if quiet:
            assert reservation.granted == min(wanted, count)
        if reservation.granted < wanted:
            later = now + round(reservation.retry_after * 1_000_000)
            assert ratelimit._window(dict(counts), later - 1, limit, 1, 0, 0).granted == 0
            assert ratelimit._window(dict(counts), later, limit, 1, 0, 0).granted == 1
        if give_back and reservation.granted:
            ratelimit._window(counts, now, limit, 0, 1, reservation.bucket)
            kept.pop()
        assert worst_window(kept, span) <= count


def test_a_rate_limit_on_a_router_alias_fails_at_startup() -> None:
    inner = {"BACKEND": "mailrouter.backend.RouterBackend",
             "OPTIONS": {"routes": [{"mailers": ["a"]}]}}  # fmt: skip
    opts = {"routes": [{"mailers": ["inner", "b"]}], "rate_limits": {"inner": "5/s"}}
    with router_settings({**MAILERS, "inner": inner}, opts), \
            pytest.raises(ConfigurationError) as raised:  # fmt: skip
        make_router()
    assert "'rate_limits' names 'inner', which is a router" in str(raised.value)
