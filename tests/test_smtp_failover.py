"""Failover against real SMTP servers on 127.0.0.1, through Django's SMTP backend.

Each fault mode is a real protocol event; the router must classify it by what
happened and at which stage, and fail over (or not) accordingly.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter.outcomes import MessageStatus
from mailrouter.testing import FaultySMTPServer

from .conftest import examples
from .messages import kinds, msg, send
from .smtp_fixtures import smtp_mailer

Start = Callable[..., FaultySMTPServer]


@pytest.fixture
def pair(
    configure: Any, smtp_server: Start
) -> Callable[..., tuple[Any, FaultySMTPServer, FaultySMTPServer]]:
    def build(
        primary_options: dict[str, Any] | None = None, **router_options: Any
    ) -> tuple[Any, FaultySMTPServer, FaultySMTPServer]:
        primary, backup = smtp_server(), smtp_server()
        router = configure(
            {
                "primary": smtp_mailer(primary, **(primary_options or {})),
                "backup": smtp_mailer(backup),
            },
            {"routes": [{"mailers": ["primary", "backup"]}], **router_options},
        )
        return router, primary, backup

    return build


def test_accepted_with_one_stable_message_id(pair: Any) -> None:
    router, primary, backup = pair()
    message = msg()
    assert router.send_messages([message]) == 1
    (received,) = primary.messages
    assert received.message_id == message.mailrouter_message_id
    assert kinds(message) == [("primary", "accepted")] and backup.messages == []


@pytest.mark.parametrize(
    ("mode", "error_type"),
    [
        ("refuse", "ConnectionRefusedError"),
        ("tempfail_connect", "SMTPConnectError"),
        ("tempfail_rcpt", "SMTPRecipientsRefused"),
        ("tempfail_data", "SMTPDataError"),
        ("drop_before_data", "SMTPServerDisconnected"),
    ],
)
def test_not_sent_fails_over(pair: Any, mode: str, error_type: str) -> None:
    router, primary, backup = pair()
    primary.mode = mode
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("primary", "not_sent"), ("backup", "accepted")]
    assert message.mailrouter_attempts[0].error_type == error_type
    assert primary.messages == [] and len(backup.messages) == 1
    assert backup.messages[0].message_id == message.mailrouter_message_id


@pytest.mark.parametrize("mode", ["reject_rcpt", "reject_data"])
def test_rejected_is_not_failed_over(pair: Any, mode: str) -> None:
    router, primary, backup = pair()
    primary.mode = mode
    message = msg()
    error = send(router, message)
    assert error is not None and error.failures[0].status is MessageStatus.REJECTED
    assert kinds(message) == [("primary", "rejected")]
    assert backup.transactions == 0


def test_too_large_for_one_relay_goes_to_the_next_without_hurting_its_health(
    configure: Any, smtp_server: Start
) -> None:
    """A relay's size limit (552 5.3.4 at MAIL FROM SIZE=) is incompatible:
    the next mailer takes the message, and the relay's breaker is untouched."""
    small, large = smtp_server(max_size=4000), smtp_server()
    router = configure(
        {"small": smtp_mailer(small), "large": smtp_mailer(large)},
        {"routes": [{"mailers": ["small", "large"]}], "health": {"failure_threshold": 1}},
    )
    big = msg("Report")
    big.attach("report.csv", "x" * 8000, "text/csv")
    batch = [big, msg("One"), msg("Two")]
    assert router.send_messages(batch) == 3
    assert kinds(big) == [("small", "incompatible"), ("large", "accepted")]
    # failure_threshold 1: a not_sent would have opened small's breaker.
    assert [kinds(m) for m in batch[1:]] == [[("small", "accepted")]] * 2
    assert [m.message_id for m in large.messages] == [big.mailrouter_message_id]


def test_partial_recipient_refusal_is_accepted(pair: Any) -> None:
    router, primary, _ = pair()
    primary.reject_recipients = ["bad@*"]
    message = msg(to=("good@example.com", "bad@example.com"))
    assert router.send_messages([message]) == 1
    assert primary.messages[0].rcpt_tos == ("good@example.com",)
    # Django's SMTP backend drops this information; the router records it.
    (attempt,) = message.mailrouter_attempts
    assert attempt.outcome.value == "accepted"
    assert attempt.error is not None and "refused recipients: bad@example.com (550" in attempt.error


@pytest.mark.parametrize("mode", ["drop_after_body", "hang_after_body"])
def test_loss_after_the_body_is_uncertain_and_not_resent(pair: Any, mode: str) -> None:
    router, primary, backup = pair(primary_options={"timeout": 0.5})
    primary.mode = mode
    message = msg()
    error = send(router, message)
    assert error is not None and error.failures[0].status is MessageStatus.UNCERTAIN
    assert kinds(message) == [("primary", "uncertain")]
    assert backup.transactions == 0


def test_at_least_once_resends_after_uncertain(pair: Any) -> None:
    router, primary, backup = pair(delivery="at_least_once")
    primary.mode = "drop_after_body"
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("primary", "uncertain"), ("backup", "accepted")]
    assert backup.messages[0].message_id == message.mailrouter_message_id


def test_hanging_mailer_costs_its_timeout_once_per_batch(pair: Any) -> None:
    router, primary, backup = pair(timeouts={"primary": 0.3})
    primary.mode = "hang_greeting"
    batch = [msg(f"m{i}") for i in range(5)]
    started = time.monotonic()
    assert router.send_messages(batch) == 5
    elapsed = time.monotonic() - started
    assert kinds(batch[0]) == [("primary", "not_sent"), ("backup", "accepted")]
    assert all(kinds(m)[0] == ("primary", "skipped") for m in batch[1:])
    assert 0.3 <= batch[0].mailrouter_attempts[0].duration < 1.5
    assert elapsed < 2.0
    assert len(backup.messages) == 5


def test_router_timeout_bounds_a_leaf_without_one(configure: Any, smtp_server: Start) -> None:
    hung, backup = smtp_server(mode="hang_greeting"), smtp_server()
    leaf = smtp_mailer(hung)
    del leaf["OPTIONS"]["timeout"]  # Django's SMTP backend would wait forever
    router = configure(
        {"hung": leaf, "backup": smtp_mailer(backup)},
        {"routes": [{"mailers": ["hung", "backup"]}], "timeout": 0.3},
    )
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("hung", "not_sent"), ("backup", "accepted")]


def test_primary_failing_part_way_loses_and_duplicates_nothing(pair: Any) -> None:
    router, primary, backup = pair()
    primary.accept_n_then(2, "refuse")
    batch = [msg(f"m{i}") for i in range(6)]
    assert router.send_messages(batch) == 6
    assert [m.sent_using for m in batch] == ["primary"] * 2 + ["backup"] * 4
    received = Counter(r.message_id for r in primary.messages + backup.messages)
    assert set(received) == {m.mailrouter_message_id for m in batch}
    assert set(received.values()) == {1}


def test_connection_is_reused_across_the_batch(configure: Any, smtp_server: Start) -> None:
    eu, world = smtp_server(), smtp_server()
    router = configure(
        {"eu": smtp_mailer(eu), "world": smtp_mailer(world)},
        {"routes": [{"when": {"to_domain": ["*.de"]}, "mailers": ["eu"]}, {"mailers": ["world"]}]},
    )
    batch = [msg(f"m{i}", to=(f"u@x.{'de' if i % 2 else 'com'}",)) for i in range(10)]
    assert router.send_messages(batch) == 10
    assert (eu.connections_opened, world.connections_opened) == (1, 1)
    assert (len(eu.messages), len(world.messages)) == (5, 5)


def test_reconnects_after_a_dropped_connection(pair: Any) -> None:
    router, primary, _backup = pair()
    primary.schedule = ["drop_before_data"]
    batch = [msg("first"), msg("second")]
    assert router.send_messages(batch) == 2
    assert kinds(batch[0]) == [("primary", "not_sent"), ("backup", "accepted")]
    assert kinds(batch[1]) == [("primary", "accepted")]
    assert primary.connections_opened == 2


def test_auth_failure_fails_over_and_hides_the_password(configure: Any, smtp_server: Start) -> None:
    secured, backup = smtp_server(username="relay", password="right-password"), smtp_server()
    router = configure(
        {
            "secured": smtp_mailer(secured, username="relay", password="wrong-password-123"),
            "backup": smtp_mailer(backup),
        },
        {"routes": [{"mailers": ["secured", "backup"]}]},
    )
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("secured", "not_sent"), ("backup", "accepted")]
    assert "wrong-password-123" not in repr(message.mailrouter_attempts)


MODES = [
    "accept",
    "accept",
    "tempfail_connect",
    "tempfail_rcpt",
    "reject_rcpt",
    "tempfail_data",
    "reject_data",
    "drop_after_body",
    "drop_before_data",
]


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    schedules=st.lists(st.lists(st.sampled_from(MODES), max_size=8), min_size=3, max_size=3),
    size=st.integers(1, 8),
    delivery=st.sampled_from(["at_most_once", "at_least_once"]),
)
def test_real_smtp_fault_schedules_end_every_message_once(
    configure: Any,
    smtp_server: Start,
    schedules: list[list[str]],
    size: int,
    delivery: str,
) -> None:
    servers = [smtp_server() for _ in schedules]
    for server, schedule in zip(servers, schedules, strict=True):
        server.schedule = schedule
    aliases = [f"m{i}" for i in range(len(servers))]
    router = configure(
        {alias: smtp_mailer(s) for alias, s in zip(aliases, servers, strict=True)},
        {"routes": [{"mailers": aliases}], "delivery": delivery},
    )
    batch = [msg(f"s{i}") for i in range(size)]
    error = send(router, *batch)
    received = Counter(r.message_id for s in servers for r in s.messages)
    for message in batch:
        mid = message.mailrouter_message_id
        status = message.mailrouter_status
        if status is MessageStatus.SENT:
            target = servers[aliases.index(message.sent_using)]
            assert [r.message_id for r in target.messages].count(mid) == 1
            assert received[mid] == 1
        else:
            assert received[mid] == 0 and message.mailrouter_attempts
            assert error is not None and any(f.message is message for f in error.failures)
