"""Route key ``strategy``: weighted and sticky splits choose the first
candidate; the rest of the route is the failover order, health as before."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from django.core.mail import EmailMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter import strategies
from mailrouter.errors import ConfigurationError
from mailrouter.health.store import Drain, store_for
from mailrouter.strategies import Strategy, StrategyKind, order
from mailrouter.testing.settings import router_settings

from . import fakes
from .conftest import examples, make_router
from .test_command import run

SCRIPTED = "tests.fakes.ScriptedBackend"
MAILERS = {alias: {"BACKEND": SCRIPTED, "OPTIONS": {"name": alias}}
           for alias in ("mailgun", "postmark", "smtp")}  # fmt: skip


def msg(to: str = "u@example.com") -> EmailMessage:
    return EmailMessage("Hi", "Body", "app@example.com", [to])


def route(**keys: Any) -> dict[str, Any]:
    return {"routes": [{"name": "main", "mailers": ["mailgun", "postmark", "smtp"], **keys}]}


def trail(message: EmailMessage) -> list[tuple[str, str]]:
    return [(a.alias, a.outcome.value) for a in message.mailrouter_attempts]  # type: ignore[attr-defined]


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"strategy": "roundrobin"}, "'strategy' must be one of 'failover', 'weighted', 'sticky'"),
        ({"strategy": "weighted"}, "'strategy' 'weighted' needs 'weights'"),
        ({"weights": {"mailgun": 1}}, "'weights' needs 'strategy'"),
        ({"strategy": "weighted", "weights": {"sendgrid": 5}}, "'weights' names 'sendgrid'"),
        ({"strategy": "weighted", "weights": {"mailgun": -1}}, "'weights'['mailgun'] must be"),
        ({"strategy": "weighted", "weights": {"mailgun": "95%"}}, "'weights'['mailgun'] must be"),
        ({"strategy": "sticky", "weights": {"mailgun": 0}}, "at least one mailer a share"),
        ({"strategy": "weighted", "weights": []}, "'weights' must be a dict"),
    ],
)
def test_bad_strategy_settings_fail_at_startup_naming_route_and_key(
    keys: dict[str, Any], expected: str
) -> None:
    with router_settings(MAILERS, route(**keys)), pytest.raises(ConfigurationError) as raised:
        make_router()
    text = str(raised.value)
    assert "route 'main'" in text and expected in text, text


# -- weighted --------------------------------------------------------------------------


def test_weighted_draw_follows_the_weights_and_the_rest_fail_over_in_order() -> None:
    strategies.RANDOM.seed(11)
    options = route(strategy="weighted", weights={"mailgun": 95, "postmark": 5})
    batch = [msg(f"u{i}@example.com") for i in range(2000)]
    with router_settings(MAILERS, options):
        assert make_router().send_messages(batch) == 2000
    firsts = Counter(m.sent_using for m in batch)  # type: ignore[attr-defined]
    # smtp has no weight: failover only, never drawn first.
    assert set(firsts) == {"mailgun", "postmark"}
    assert 0.03 < firsts["postmark"] / 2000 < 0.07, firsts


def test_weighted_draw_fails_over_in_route_order_when_the_drawn_mailer_fails() -> None:
    options = route(strategy="weighted", weights={"postmark": 1})
    fakes.SCRIPTS["postmark"].append("tempfail")
    with router_settings(MAILERS, options):
        message = msg()
        make_router().send_messages([message])
    assert trail(message) == [("postmark", "not_sent"), ("mailgun", "accepted")]


@settings(max_examples=examples(200), deadline=None)
@given(
    weights=st.lists(st.integers(0, 5), min_size=1, max_size=5).filter(any),
    seed=st.integers(0, 2**32),
)
def test_weighted_order_is_a_permutation_with_a_positively_weighted_head(
    weights: list[int], seed: int
) -> None:
    aliases = [f"m{i}" for i in range(len(weights))]
    strategy = Strategy(StrategyKind.WEIGHTED, dict(zip(aliases, map(float, weights), strict=True)))
    ordered, draw = order(aliases, aliases, strategy, None, random.Random(seed))
    assert sorted(ordered) == sorted(aliases)
    assert weights[aliases.index(ordered[0])] > 0
    rest = [alias for alias in aliases if alias != ordered[0]]
    assert list(ordered[1:]) == rest  # the others keep the route order
    if len(aliases) > 1:
        assert draw is not None and draw.first == ordered[0]


# -- sticky ----------------------------------------------------------------------------


def test_sticky_keeps_a_recipient_on_one_mailer_and_spreads_recipients() -> None:
    options = route(strategy="sticky")
    with router_settings(MAILERS, options):
        first = [msg(f"user{i}@example.com") for i in range(300)]
        again = [msg(f"USER{i}@Example.com") for i in range(300)]  # case does not matter
        make_router().send_messages(first)
        make_router().send_messages(again)
    assert [m.sent_using for m in first] == [m.sent_using for m in again]  # type: ignore[attr-defined]
    spread = Counter(m.sent_using for m in first)  # type: ignore[attr-defined]
    assert set(spread) == {"mailgun", "postmark", "smtp"}
    assert min(spread.values()) > 60, spread


def test_sticky_choice_is_the_same_in_another_process() -> None:
    aliases = ["mailgun", "postmark", "smtp"]
    strategy = Strategy(StrategyKind.STICKY, {a: 1.0 for a in aliases})
    mine = [order(aliases, aliases, strategy, msg(f"p{i}@x.org"))[0][0] for i in range(20)]
    code = (
        "import django; from django.conf import settings; settings.configure(); "
        "from django.core.mail import EmailMessage; "
        "from mailrouter.strategies import Strategy, StrategyKind, order; "
        "a = ['mailgun', 'postmark', 'smtp']; "
        "s = Strategy(StrategyKind.STICKY, {x: 1.0 for x in a}); "
        "print(','.join(order(a, a, s, EmailMessage('', '', 'f@x.org', [f'p{i}@x.org']))[0][0] "
        "for i in range(20)))"
    )
    theirs = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.strip().split(",")
    assert theirs == mine


def test_sticky_moves_only_while_its_mailer_is_skipped(clock: Any) -> None:
    options = {**route(strategy="sticky"), "health": {"clock": "tests.health_fixtures.CLOCK"}}
    with router_settings(MAILERS, options):
        router = make_router()
        recipients = [f"r{i}@example.com" for i in range(60)]
        before = {to: send_to(router, to) for to in recipients}
        home = {to: alias for to, alias in before.items()}
        store = store_for(router.config.health_settings)
        store.set_drain("mailgun", Drain(clock.now, None, "maintenance"))
        during = {to: send_to(router, to) for to in recipients}
        store.clear_drain("mailgun")
        after = {to: send_to(router, to) for to in recipients}
    assert after == before
    for to in recipients:
        if home[to] == "mailgun":
            assert during[to] != "mailgun"
        else:
            assert during[to] == home[to]  # nobody else moves


def send_to(router: Any, to: str) -> str:
    message = msg(to)
    router.send_messages([message])
    return str(message.sent_using)


def test_removing_a_mailer_moves_only_its_own_recipients() -> None:
    three = ["mailgun", "postmark", "smtp"]
    two = ["mailgun", "postmark"]
    sticky3 = Strategy(StrategyKind.STICKY, {a: 1.0 for a in three})
    sticky2 = Strategy(StrategyKind.STICKY, {a: 1.0 for a in two})
    for i in range(300):
        message = msg(f"k{i}@example.org")
        before = order(three, three, sticky3, message)[0][0]
        after = order(two, two, sticky2, message)[0][0]
        if before != "smtp":
            assert after == before


def test_sticky_with_weights_splits_recipients_by_weight() -> None:
    aliases = ["mailgun", "postmark"]
    strategy = Strategy(StrategyKind.STICKY, {"mailgun": 3.0, "postmark": 1.0})
    firsts = Counter(order(aliases, aliases, strategy, msg(f"w{i}@x.org"))[0][0]
                     for i in range(4000))  # fmt: skip
    assert 0.70 < firsts["mailgun"] / 4000 < 0.80, firsts


# -- explain ---------------------------------------------------------------------------


def test_explain_shows_the_strategy_and_the_draw() -> None:
    options = route(strategy="weighted", weights={"postmark": 1})
    with router_settings(MAILERS, options):
        code, out = run("explain", "--to", "u@example.com")
        assert code == 0
        assert "strategy: weighted (mailgun 0, postmark 1, smtp 0)" in out
        assert "first: postmark (drawn by weight 1 of 1)" in out
        assert out.index("1. postmark") < out.index("2. mailgun") < out.index("3. smtp")
    with router_settings(MAILERS, route(strategy="sticky")):
        code, out = run("explain", "--to", "u@example.com", "--json")
        reason = "sticky: chosen by a hash of the recipient address 'u@example.com'"
        assert f'"reason": "{reason}"' in out


def test_router_explain_returns_the_draw() -> None:
    options = route(strategy="weighted", weights={"smtp": 1})
    with router_settings(MAILERS, options):
        explanation = make_router().explain(msg())
    assert explanation.strategy == "weighted (mailgun 0, postmark 0, smtp 1)"
    assert explanation.draw is not None and explanation.draw.first == "smtp"
    assert [c.alias for c in explanation.candidates] == ["smtp", "mailgun", "postmark"]
    assert explanation.as_dict()["draw"] == {"first": "smtp", "reason": "drawn by weight 1 of 1"}
