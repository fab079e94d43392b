"""Invariants with circuit breakers on, over random sequences of batches,
fault schedules and clock jumps:

- every message still ends exactly once (tests/invariants.py);
- a mailer the router records as skipped got no I/O: the attempts recorded as
  tried are exactly the attempts that reached the mailers;
- health never makes a message fail untried: when no candidate in rotation
  can take it, those skipped by health are tried as the last resort;
- fail-back: once the mailers are healthy and every cooldown is over, a
  message goes to its first candidate again.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from django.core.mail import EmailMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter.errors import DeliveryError
from mailrouter.health import store as health_store
from mailrouter.outcomes import Outcome
from mailrouter.testing.settings import router_settings

from . import fakes
from .conftest import examples, make_router
from .health_fixtures import CLOCK, START
from .invariants import assert_each_ends_exactly_once

ALIASES = ("a", "b", "c")
MAILERS = {
    alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
    for alias in ALIASES
}
HEALTH = {
    "failure_threshold": 2,
    "failure_rate": 0.5,
    "min_attempts": 4,
    "window": 60,
    "cooldown": 10,
    "max_cooldown": 40,
    "clock": "tests.health_fixtures.CLOCK",
}
#: Skip reasons that come from the batch itself, not from health.
BATCH_SKIP = "not tried:"

batches = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=6),  # messages in the batch
        st.sampled_from([0.0, 0.5, 5.0, 11.0, 45.0]),  # clock jump before it
        st.one_of(st.none(), st.permutations(ALIASES)),  # pin for the whole batch
    ),
    min_size=1,
    max_size=6,
)
schedules = st.fixed_dictionaries(
    {alias: st.lists(st.sampled_from(fakes.ACTIONS), max_size=16) for alias in ALIASES}
)


@settings(
    max_examples=examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batch_specs=batches,
    schedule=schedules,
    delivery=st.sampled_from(["at_most_once", "at_least_once"]),
    concurrency=st.sampled_from([1, 1, 3]),
)
def test_breakers_never_break_exactly_once_and_fail_back(
    batch_specs: list[tuple[int, float, tuple[str, ...] | None]],
    schedule: dict[str, list[str]],
    delivery: str,
    concurrency: int,
) -> None:
    fakes.reset()
    health_store.reset_stores()
    CLOCK.now = START
    for alias, actions in schedule.items():
        fakes.SCRIPTS[alias].extend(actions)
    options: dict[str, Any] = {
        "routes": [{"mailers": list(ALIASES)}],
        "delivery": delivery,
        "health": HEALTH,
        "concurrency": concurrency,
    }
    sent: list[EmailMessage] = []
    with router_settings(MAILERS, options):
        for number, (size, jump, pin) in enumerate(batch_specs):
            CLOCK.advance(jump)
            batch = [
                EmailMessage(f"b{number}m{i}", "body", "app@example.com", ["u@example.com"])
                for i in range(size)
            ]
            for message in batch:
                if pin is not None:
                    message.mailers = list(pin)  # type: ignore[attr-defined]
            with contextlib.suppress(DeliveryError):  # failures are checked below
                make_router().send_messages(batch)
            sent += batch

        assert_each_ends_exactly_once(sent, delivery)
        tried = Counter(
            a.alias
            for m in sent
            for a in m.mailrouter_attempts  # type: ignore[attr-defined]
            if a.outcome is not Outcome.SKIPPED
        )
        assert tried == Counter({k: v for k, v in fakes.TRIED.items() if v})
        for message in sent:
            attempts = message.mailrouter_attempts  # type: ignore[attr-defined]
            if attempts and all(a.outcome is Outcome.SKIPPED for a in attempts):
                # Those out of rotation were tried as the last resort: every
                # candidate ended "down earlier in this batch".
                assert all(str(a.error).startswith(BATCH_SKIP) for a in attempts), attempts

        # Healthy again, every cooldown over: traffic returns to the first candidate.
        fakes.SCRIPTS.clear()
        CLOCK.advance(HEALTH["max_cooldown"] + HEALTH["window"] + 1)
        final = EmailMessage("after", "body", "app@example.com", ["u@example.com"])
        make_router().send_messages([final])
        assert [(a.alias, a.outcome) for a in final.mailrouter_attempts] == [  # type: ignore[attr-defined]
            ("a", Outcome.ACCEPTED)
        ]
