"""keep_routing and mailer_fails in-process (the user-project subprocess tests
in test_user_project.py run them under both test runners)."""

from __future__ import annotations

import contextlib
import time
import unittest
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage

from mailrouter import DeliveryError, MessageStatus, Outcome
from mailrouter.compat import HAS_MAILERS
from mailrouter.health.settings import HealthSettings
from mailrouter.health.store import Drain, store_for
from mailrouter.testing import keep_routing, mailer_fails
from mailrouter.testing.redis import RedisServer
from mailrouter.testing.settings import ROUTER, router_settings

SMTP = "django.core.mail.backends.smtp.EmailBackend"
LEAVES = {alias: {"BACKEND": SMTP, "OPTIONS": {"host": "127.0.0.1", "port": 9, "timeout": 1}}
          for alias in ("first", "second")}
OPTIONS = {"routes": [{"mailers": ["first", "second"]}], "health": False}


def send() -> EmailMessage:
    message = EmailMessage("Hello", "Body", "app@example.com", ["ann@example.com"])
    with contextlib.suppress(DeliveryError):
        message.send()
    return message


@pytest.mark.parametrize(
    ("outcome", "tried", "status"),
    [
        ("not_sent", [("first", "not_sent"), ("second", "accepted")], MessageStatus.SENT),
        ("incompatible", [("first", "incompatible"), ("second", "accepted")], MessageStatus.SENT),
        ("rejected", [("first", "rejected")], MessageStatus.REJECTED),
        ("uncertain", [("first", "uncertain")], MessageStatus.UNCERTAIN),
    ],
)
def test_mailer_fails_goes_through_the_real_classifier(
    outcome: str, tried: list[tuple[str, str]], status: MessageStatus
) -> None:
    with router_settings(LEAVES, OPTIONS), keep_routing(), mailer_fails("first", outcome):
        message = send()
    assert [(a.alias, a.outcome.value) for a in message.mailrouter_attempts] == tried  # type: ignore[attr-defined]
    assert message.mailrouter_status is status  # type: ignore[attr-defined]
    sent = [m for m in mail.outbox if m.mailrouter_message_id == message.mailrouter_message_id]
    assert len(sent) == (status is MessageStatus.SENT)
    if sent:
        assert sent[0].sent_using == "second"  # type: ignore[attr-defined]
        assert sent[0].mailrouter_attempts == message.mailrouter_attempts  # type: ignore[attr-defined]


def test_mailer_fails_refuses_non_failures_and_nests() -> None:
    with pytest.raises(ValueError, match="not a failure"), mailer_fails("first", "accepted"):
        pass
    with router_settings(LEAVES, OPTIONS), keep_routing():
        with mailer_fails("first", "rejected"):
            with mailer_fails("first", Outcome.NOT_SENT):
                assert send().sent_using == "second"  # type: ignore[attr-defined]
            assert send().mailrouter_status is MessageStatus.REJECTED  # type: ignore[attr-defined]
        assert send().sent_using == "first"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("alias", "what"), [("frist", "not a configured mailer"), ("default", "a router")]
)
def test_mailer_fails_refuses_an_alias_that_is_no_leaf(alias: str, what: str) -> None:
    if alias == "default" and not HAS_MAILERS:
        what = "not a configured mailer"  # the legacy router has no alias
    with (
        router_settings(LEAVES, OPTIONS),
        keep_routing(),
        pytest.raises(ValueError) as raised,
        mailer_fails(alias),
    ):
        pass
    expected = (
        f"{alias!r} is {what}; it takes a leaf mailer alias (known leaves: 'first', 'second')"
    )
    assert expected in str(raised.value)


def test_keep_routing_keeps_nested_routers_and_their_routes() -> None:
    nested: dict[str, Any] = {
        **LEAVES,
        "inner": {"BACKEND": ROUTER, "OPTIONS": {"routes": [{"mailers": ["second"]}]}},
    }
    options = {"routes": [{"name": "via-inner", "mailers": ["inner"]}], "health": False}
    with router_settings(nested, options), keep_routing():
        message = send()
    assert message.mailrouter_route == "via-inner"  # type: ignore[attr-defined]
    assert mail.outbox[-1].sent_using == "second"  # type: ignore[attr-defined]


def test_keep_routing_without_parentheses_decorates_like_with_them() -> None:
    """``@keep_routing`` works as ``@keep_routing()`` does, like transaction.atomic."""

    @keep_routing
    def decorated_function() -> EmailMessage:
        return send()

    @keep_routing
    class DecoratedCase(unittest.TestCase):
        def test_routes(self) -> None:
            assert send().sent_using == "first"  # type: ignore[attr-defined]

    @keep_routing
    class DecoratedPytestClass:
        def test_routes(self) -> EmailMessage:
            return send()

    with router_settings(LEAVES, OPTIONS):
        assert decorated_function().sent_using == "first"  # type: ignore[attr-defined]
        result = unittest.TestResult()
        unittest.TestSuite([DecoratedCase("test_routes")]).run(result)
        assert (result.testsRun, result.failures, result.errors) == (1, [], [])
        assert DecoratedPytestClass().test_routes().sent_using == "first"  # type: ignore[attr-defined]
        # Outside the decorated callables the leaves are the unreachable relays again.
        assert send().sent_using is None  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="takes a test function or class"):
        keep_routing(42)  # type: ignore[call-overload]


def test_each_keep_routing_starts_clean_and_leaves_the_configured_cache_alone(
    redis: RedisServer,
) -> None:
    """Breakers opened in one block are gone in the next; the configured Redis
    health cache is neither read (an operator's drain) nor written."""
    options = {"routes": [{"mailers": ["first", "second"]}],
               "health": {"cache": "health", "failure_threshold": 1, "failure_rate": None}}
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              "health": redis.cache_settings()}
    with router_settings(LEAVES, options, CACHES=caches):
        store_for(HealthSettings(cache="health")).set_drain("second", Drain(since=time.time()))
        before = sorted(redis.client().keys("*"))
        for _ in range(2):
            with keep_routing():
                with mailer_fails("first"):
                    assert send().sent_using == "second"  # type: ignore[attr-defined]
                # The breaker opened above; the drain in Redis is not seen.
                assert [a.outcome for a in send().mailrouter_attempts] == [  # type: ignore[attr-defined]
                    Outcome.SKIPPED, Outcome.ACCEPTED]
        assert sorted(redis.client().keys("*")) == before
        with keep_routing(shared_state=True):
            message = send()
        # The drained "second" goes last: the operator's drain is seen.
        assert message.sent_using == "first"  # type: ignore[attr-defined]
        assert [a.alias for a in message.mailrouter_attempts] == ["first"]  # type: ignore[attr-defined]
