"""One rule for drains, open breakers, status pages and rate limits.

A mailer out of rotation (drained, circuit open, status page down) is tried
only as the last resort: after every candidate in rotation really failed
(or when there is none), never while one of them merely lacks rate budget;
such an attempt says so (``attempt.last_resort``). Checked as a property over
random mixes of the four, with pages served by a real local HTTP server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter import ratelimit
from mailrouter.backend import RouterBackend
from mailrouter.errors import DeliveryError
from mailrouter.health import store as health_store
from mailrouter.health.breaker import Breaker
from mailrouter.health.store import Drain
from mailrouter.outcomes import Outcome
from mailrouter.status_pages.refresh import refresh_now
from mailrouter.testing.settings import router_settings

from . import fakes
from .conftest import examples, make_router
from .health_fixtures import FakeClock
from .status_server import StatusPageServer, statuspage

ALIASES = ("a", "b", "c")
MAILERS = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
           for alias in ALIASES}  # fmt: skip
STATES = ("live", "drained", "open", "page_down")
#: Scripted answers: accepted, not sent (two ways), rejected.
ANSWERS = ("accept", "tempfail", "refuse_connect", "reject")


@pytest.fixture(scope="module")
def server() -> Iterator[StatusPageServer]:
    with StatusPageServer() as running:
        yield running


def router_options(server: StatusPageServer) -> dict[str, Any]:
    pages = {alias: {"url": server.url(f"/{alias}"), "components": ["Email"],
                     "allow_http": True, "timeout": 2} for alias in ALIASES}  # fmt: skip
    return {
        "routes": [{"mailers": list(ALIASES)}],
        "health": {"failure_threshold": 3, "failure_rate": None, "cooldown": 60,
                   "clock": "tests.health_fixtures.CLOCK"},
        "status_pages": pages,
        "rate_limits": {alias: "1/h" for alias in ALIASES},
        "max_wait": 0,
    }  # fmt: skip


def prepare(router: RouterBackend, server: StatusPageServer, states: dict[str, str],
            budget: dict[str, bool], answers: dict[str, str]) -> None:  # fmt: skip
    config = router.config
    store = health_store.store_for(config.health_settings)
    store.forget()
    fakes.reset()
    now = config.health_settings.clock()
    for alias in ALIASES:
        down = states[alias] == "page_down"
        server.pages[f"/{alias}"] = statuspage({"Email": "major_outage" if down else "operational"})
    refresh_now(dict(config.status_pages), store, config.health_settings.clock)
    storage = ratelimit.storage_for(config.health_settings.cache)
    assert isinstance(storage, ratelimit.MemoryStorage)
    storage.clear()
    for alias in ALIASES:
        if states[alias] == "drained":
            store.set_drain(alias, Drain(now, None, "maintenance"))
        elif states[alias] == "open":
            policy = config.health_settings.policy(alias)
            store.save_breaker(alias, policy.open(Breaker(), now, "failures"), 3600)
        if not budget[alias]:
            assert storage.reserve(alias, config.rate_limits[alias], 1).granted == 1
        fakes.SCRIPTS[alias].append(answers[alias])


def expected(states: dict[str, str], budget: dict[str, bool],
             answers: dict[str, str]) -> tuple[list[str], str | None]:  # fmt: skip
    """The documented rule, written out: (aliases attempted in order, sent_using)."""
    tried: list[str] = []
    live = [alias for alias in ALIASES if states[alias] == "live"]
    out = [alias for alias in ALIASES if states[alias] != "live"]
    lacked = False
    for group in (live, out):
        if group is out and (lacked or not out):
            break
        for alias in group:
            if not budget[alias]:
                lacked = True
                continue
            tried.append(alias)
            if answers[alias] == "accept":
                return tried, alias
            if answers[alias] == "reject":
                return tried, None
    return tried, None


@settings(max_examples=examples(150), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    states=st.fixed_dictionaries({alias: st.sampled_from(STATES) for alias in ALIASES}),
    budget=st.fixed_dictionaries({alias: st.booleans() for alias in ALIASES}),
    answers=st.fixed_dictionaries({alias: st.sampled_from(ANSWERS) for alias in ALIASES}),
)
def test_out_of_rotation_mailers_are_only_the_last_resort(
    server: StatusPageServer, clock: FakeClock, states: dict[str, str],
    budget: dict[str, bool], answers: dict[str, str],
) -> None:  # fmt: skip
    with router_settings(MAILERS, router_options(server)):
        router = make_router()  # a new one: it remembers budgets known empty
        prepare(router, server, states, budget, answers)
        message = EmailMessage("m", "body", "app@example.com", ["u@example.com"])
        router.fail_silently = True
        router.send_messages([message])
    attempts = message.mailrouter_attempts  # type: ignore[attr-defined]
    tried, sent_using = expected(states, budget, answers)
    assert [a.alias for a in attempts if a.outcome is not Outcome.SKIPPED] == tried, attempts
    assert message.sent_using == sent_using  # type: ignore[attr-defined]
    # Only what was recorded as tried reached a mailer.
    assert {alias: count for alias, count in fakes.TRIED.items() if count} == {
        alias: 1 for alias in tried
    }
    for attempt in attempts:
        # A mailer out of rotation tried (or found out of budget) as the last
        # resort says why it was out; nothing else claims to be a last resort.
        last_resort = states[attempt.alias] != "live" and (
            attempt.outcome is not Outcome.SKIPPED or attempt.error.startswith("rate limit")
        )
        assert (attempt.last_resort is not None) == last_resort, attempts
    assert len({a.alias for a in attempts}) == len(attempts)  # one record per mailer


def test_a_drained_mailer_takes_no_overflow_when_the_others_lack_budget(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    """10 messages, "a" allows 5 at once, "relay" is drained: 5 go through
    "a", 5 fail with their rate-limit skips; none reaches the drained relay."""
    mailers = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
               for alias in ("a", "relay")}  # fmt: skip
    router = configure(mailers, {
        "routes": [{"mailers": ["a", "relay"]}],
        "health": {"clock": "tests.health_fixtures.CLOCK"},
        "rate_limits": {"a": "5/h"},
        "max_wait": 0,
    })  # fmt: skip
    store = health_store.store_for(router.config.health_settings)
    store.set_drain("relay", Drain(clock.now, None, "migration"))
    batch = [EmailMessage(f"m{i}", "b", "app@example.com", ["u@example.com"]) for i in range(10)]
    with pytest.raises(DeliveryError) as raised:
        router.send_messages(batch)
    assert [m.sent_using for m in batch] == ["a"] * 5 + [None] * 5  # type: ignore[attr-defined]
    assert fakes.TRIED["relay"] == 0
    assert raised.value.sent == 5
    for message in batch[5:]:
        kinds = [(a.alias, a.outcome, (a.error or "")[:10])
                 for a in message.mailrouter_attempts]  # type: ignore[attr-defined]  # fmt: skip
        assert kinds == [
            ("a", Outcome.SKIPPED, "rate limit"), ("relay", Outcome.SKIPPED, "drained: m")
        ]


def test_a_drained_mailer_is_the_last_resort_after_the_live_one_really_failed(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    """The live mailer answers 4xx: the drained one takes the message, and
    its attempt says it was made despite the drain."""
    router = configure(MAILERS, {
        "routes": [{"mailers": ["a", "b"]}],
        "health": {"clock": "tests.health_fixtures.CLOCK"},
    })  # fmt: skip
    store = health_store.store_for(router.config.health_settings)
    store.set_drain("a", Drain(clock.now, None, "migration"))
    fakes.SCRIPTS["b"].append("tempfail")
    message = EmailMessage("m", "b", "app@example.com", ["u@example.com"])
    assert router.send_messages([message]) == 1
    attempts: Any = message.mailrouter_attempts  # type: ignore[attr-defined]
    assert [(a.alias, a.outcome) for a in attempts] == [
        ("b", Outcome.NOT_SENT), ("a", Outcome.ACCEPTED)
    ]
    assert attempts[1].last_resort == "drained: migration"
    assert "last resort, despite: drained: migration" in attempts[1].describe()
