"""Failover with django-anymail's real Mailgun, Postmark and Amazon SES backends talking
HTTP to a local server that speaks their send APIs (mailrouter.testing.esp)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.mail import EmailMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter.errors import DeliveryError
from mailrouter.outcomes import MessageStatus
from mailrouter.testing import FakeESPServer
from mailrouter.testing.settings import router_settings

from .conftest import examples, make_router
from .esp_fixtures import API_KEY, amazon_ses, mailgun, mailgun_then_smtp, postmark
from .messages import kinds, msg


@pytest.fixture
def esps(configure: Any, esp: Callable[..., FakeESPServer]) -> Callable[..., Any]:
    def build(
        mailgun_options: dict[str, Any] | None = None, **router_options: Any
    ) -> tuple[Any, FakeESPServer, FakeESPServer]:
        primary, backup = esp(), esp()
        router = configure(
            {"mailgun": mailgun(primary, **(mailgun_options or {})), "postmark": postmark(backup)},
            {"routes": [{"mailers": ["mailgun", "postmark"]}], **router_options},
        )
        return router, primary, backup

    return build


def test_accepted_by_mailgun_with_the_message_id(esps: Any) -> None:
    router, primary, backup = esps()
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("mailgun", "accepted")]
    assert primary.messages[0].message_id == message.mailrouter_message_id
    assert message.anymail_status.status == {"queued"}
    assert backup.requests_seen == 0


@pytest.mark.parametrize(
    "mode",
    ["error_500", "error_503", "rate_limited_429", "unauthorized_401", "forbidden_403", "refuse"],
)
def test_not_sent_fails_over_to_postmark_with_the_same_message_id(esps: Any, mode: str) -> None:
    router, primary, backup = esps()
    primary.mode = mode
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("mailgun", "not_sent"), ("postmark", "accepted")]
    (received,) = backup.messages
    assert received.message_id == message.mailrouter_message_id
    assert primary.messages == [] and primary.maybe_delivered == []


@pytest.mark.parametrize("mode", ["bad_request_400", "unprocessable_422"])
def test_validation_errors_are_rejected_not_failed_over(esps: Any, mode: str) -> None:
    router, primary, backup = esps()
    primary.mode = mode
    message = msg()
    with pytest.raises(DeliveryError) as raised:
        router.send_messages([message])
    assert raised.value.failures[0].status is MessageStatus.REJECTED
    assert kinds(message) == [("mailgun", "rejected")] and backup.requests_seen == 0


INACTIVE = (
    "You tried to send to a recipient that has been marked as inactive.\n"
    "Found inactive addresses: user@example.com.\n"
    "Inactive recipients are ones that have generated a hard bounce or a spam complaint."
)


@pytest.mark.parametrize(
    ("error_code", "text", "expected"),
    [
        # Account problems: this mailer can send nothing; the next one can.
        (405, "Not allowed to send: you have run out of credits.", "not_sent"),
        (412, "Your account is pending approval.", "not_sent"),
        (413, "This account may not send.", "not_sent"),
        # This mailer cannot take this message; another may.
        (300, "Invalid 'From' address: 'app@example.com' is not a verified sender signature.",
         "incompatible"),
        (400, "Sender signature not defined for From address.", "incompatible"),
        (411, "Forbidden attachment type: x.exe", "incompatible"),
        # The message itself is bad: no failover.
        (300, "Error parsing 'Reply-To': Illegal email domain 'x' in address 'a@x'.", "rejected"),
        (406, INACTIVE, "rejected"),
        (None, "no ErrorCode: not Postmark's documented shape", "rejected"),
    ],
)  # fmt: skip
def test_postmark_422_is_classified_by_its_error_code(
    configure: Any, esp: Callable[..., FakeESPServer], error_code: int | None, text: str,
    expected: str,
) -> None:
    body: dict[str, Any] = {"Message": text}
    if error_code is not None:
        body["ErrorCode"] = error_code
    primary, backup = esp(mode="unprocessable_422", error_body=body), esp()
    router = configure(
        {"postmark": postmark(primary), "mailgun": mailgun(backup)},
        {"routes": [{"mailers": ["postmark", "mailgun"]}]},
    )
    message = msg()
    router.fail_silently = True
    router.send_messages([message])
    if expected == "rejected":
        assert kinds(message) == [("postmark", "rejected")] and backup.requests_seen == 0
    else:
        assert kinds(message) == [("postmark", expected), ("mailgun", "accepted")]
        assert backup.messages[0].message_id == message.mailrouter_message_id
    assert primary.messages == []


@pytest.mark.parametrize(
    ("mode", "error_body", "expected"),
    [
        ("ok", None, "accepted"),
        # SES answers 400 for throttling, quotas and paused accounts too: the
        # error code decides, not the status.
        ("rate_limited_429", None, "not_sent"),
        ("bad_request_400", {"__type": "LimitExceededException",
                             "message": "Maximum sending rate exceeded."}, "not_sent"),
        ("bad_request_400", {"__type": "SendingPausedException",
                             "message": "Sending is paused for this account."}, "not_sent"),
        ("error_503", None, "not_sent"),
        ("unauthorized_401", None, "not_sent"),
        ("bad_request_400", {"__type": "MessageRejected",
                             "message": "Email address is not verified. The following identities "
                                        "failed the check in region EU-WEST-1: app@example.com"},
         "incompatible"),
        ("bad_request_400", {"__type": "MessageRejected",
                             "message": "Illegal address"}, "rejected"),
        ("bad_request_400", None, "rejected"),
        ("read_timeout", None, "uncertain"),
        ("drop", None, "uncertain"),
        ("refuse", None, "not_sent"),
    ],
)  # fmt: skip
def test_amazon_ses_through_boto3_is_classified_by_error_code(
    configure: Any, esp: Callable[..., FakeESPServer], mode: str,
    error_body: dict[str, str] | None, expected: str,
) -> None:
    primary, backup = esp(error_body=error_body), esp()
    primary.mode = mode
    router = configure(
        {"ses": amazon_ses(primary), "postmark": postmark(backup)},
        {"routes": [{"mailers": ["ses", "postmark"]}]},
    )
    message = msg()
    router.fail_silently = True
    router.send_messages([message])
    trail = kinds(message)
    assert trail[0] == ("ses", expected)
    if expected == "accepted":
        assert primary.messages[0].message_id == message.mailrouter_message_id
    elif expected in ("not_sent", "incompatible"):
        assert trail == [("ses", expected), ("postmark", "accepted")]
        assert backup.messages[0].message_id == message.mailrouter_message_id
    else:
        assert trail == [("ses", expected)] and backup.requests_seen == 0
    # One request per attempt: botocore made no retries of its own.
    assert primary.requests_seen <= 1
    assert "ses-secret-not-for-logs" not in str(message.mailrouter_attempts)  # type: ignore[attr-defined]


@pytest.mark.parametrize("router_timeouts", [{"timeout": 0.4}, {"timeouts": {"ses": 0.4}}])
def test_router_timeouts_bound_a_boto3_leaf(
    configure: Any, esp: Callable[..., FakeESPServer], router_timeouts: dict[str, Any]
) -> None:
    """boto3 waits 60 s per read by default; the router's timeout applies to it."""
    server = esp(mode="read_timeout")
    leaf = amazon_ses(server, read_timeout=None, connect_timeout=None)
    if "timeouts" in router_timeouts:
        leaf["OPTIONS"]["client_params"]["config"]["read_timeout"] = 30  # overridden
    router = configure({"ses": leaf}, {"routes": [{"mailers": ["ses"]}], **router_timeouts})
    message = msg()
    router.fail_silently = True
    router.send_messages([message])
    [attempt] = message.mailrouter_attempts  # type: ignore[attr-defined]
    assert attempt.outcome.value == "uncertain" and attempt.duration < 5
    assert server.requests_seen == 1


def test_a_boto3_leaf_that_retries_on_its_own_is_warned_about(
    configure: Any, esp: Callable[..., FakeESPServer]
) -> None:
    from django.core import checks

    server = esp()
    careless = amazon_ses(server, retries=None)
    configure(
        {"ses": careless, "ses_ok": amazon_ses(server)},
        {"routes": [{"mailers": ["ses", "ses_ok"]}]},
    )
    warnings = [m for m in checks.run_checks() if m.id == "mailrouter.W002"]
    assert len(warnings) == 1 and "'ses'" in warnings[0].msg


@pytest.mark.parametrize("mode", ["read_timeout", "garbage_2xx", "drop"])
def test_maybe_delivered_is_uncertain_and_not_resent(esps: Any, mode: str) -> None:
    router, primary, backup = esps(mailgun_options={"timeout": 0.5})
    primary.mode = mode
    message = msg()
    with pytest.raises(DeliveryError, match="uncertain"):
        router.send_messages([message])
    assert kinds(message) == [("mailgun", "uncertain")]
    assert len(primary.maybe_delivered) == 1 and backup.requests_seen == 0


def test_at_least_once_resends_after_a_read_timeout(esps: Any) -> None:
    router, primary, backup = esps(mailgun_options={"timeout": 0.5}, delivery="at_least_once")
    primary.mode = "read_timeout"
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("mailgun", "uncertain"), ("postmark", "accepted")]
    assert primary.maybe_delivered[0].message_id == backup.messages[0].message_id


def test_unsupported_feature_is_incompatible_and_tries_next(configure: Any, esp: Any) -> None:
    primary, backup = esp(), esp()
    router = configure(
        {"postmark": postmark(primary), "mailgun": mailgun(backup)},
        {"routes": [{"mailers": ["postmark", "mailgun"]}]},
    )
    message = msg(tags=["one", "two"])  # Postmark allows a single tag
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("postmark", "incompatible"), ("mailgun", "accepted")]
    assert message.mailrouter_attempts[0].error_type == "AnymailUnsupportedFeature"
    assert primary.requests_seen == 0


def test_recipients_refused_is_rejected(configure: Any, esp: Any) -> None:
    server = esp()
    router = configure(
        {"postmark": postmark(server), "mailgun": mailgun(server)},
        {"routes": [{"mailers": ["postmark", "mailgun"]}]},
    )
    message = msg()
    message.to = ["not an address"]
    with pytest.raises(DeliveryError) as raised:
        router.send_messages([message])
    assert kinds(message) == [("postmark", "rejected")]
    assert raised.value.failures[0].attempts[0].error_type == "AnymailInvalidAddress"


def test_wrong_api_key_fails_over_and_is_never_shown(configure: Any, esp: Any) -> None:
    primary, backup = esp(), esp()
    wrong = "key-wrong-9876543210fedcba"
    router = configure(
        {"mailgun": mailgun(primary, api_key=wrong), "postmark": postmark(backup)},
        {"routes": [{"mailers": ["mailgun", "postmark"]}]},
    )
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("mailgun", "not_sent"), ("postmark", "accepted")]
    assert wrong not in repr(message.mailrouter_attempts)
    assert API_KEY not in repr(message.mailrouter_attempts)


def test_mailgun_failing_part_way_through_a_batch(esps: Any) -> None:
    router, primary, backup = esps()
    primary.accept_n_then(3, "error_503")
    batch = [msg(f"m{i}") for i in range(8)]
    assert router.send_messages(batch) == 8
    assert [m.sent_using for m in batch] == ["mailgun"] * 3 + ["postmark"] * 5
    ids = [r.message_id for r in primary.messages + backup.messages]
    assert sorted(ids) == sorted(m.mailrouter_message_id for m in batch)


def test_failed_attempt_leaves_no_anymail_status_behind(esps: Any) -> None:
    router, primary, _backup = esps()
    primary.mode = "error_500"
    message = msg()
    router.send_messages([message])
    # The status is Postmark's, not a leftover from the failed Mailgun attempt.
    assert message.anymail_status.esp_response.json()["ErrorCode"] == 0


def test_a_send_cancelled_by_pre_send_is_not_failed_over(
    configure: Any, esp: Any, smtp_server: Any
) -> None:
    from anymail.exceptions import AnymailCancelSend
    from anymail.signals import pre_send

    primary, relay = esp(), smtp_server()
    router = mailgun_then_smtp(configure, primary, relay)

    def suppress(sender: Any, message: EmailMessage, **kwargs: Any) -> None:
        if "suppressed" in str(message.subject):
            raise AnymailCancelSend("on the suppression list")

    pre_send.connect(suppress)
    try:
        suppressed, normal = msg("suppressed"), msg("normal")
        with pytest.raises(DeliveryError) as raised:
            router.send_messages([suppressed, normal])
    finally:
        pre_send.disconnect(suppress)
    assert kinds(suppressed) == [("mailgun", "rejected")]
    assert raised.value.failures[0].message is suppressed
    assert kinds(normal) == [("mailgun", "accepted")]
    assert relay.transactions == 0 and primary.requests_seen == 1


ESP_MODES = ["ok", "ok", "error_503", "rate_limited_429", "bad_request_400",
             "read_timeout", "garbage_2xx", "drop", "odd_2xx", "bad_gateway_502"]


@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    schedules=st.lists(st.lists(st.sampled_from(ESP_MODES), max_size=6), min_size=3, max_size=3),
    size=st.integers(1, 6),
    delivery=st.sampled_from(["at_most_once", "at_least_once"]),
    post_send_errors=st.lists(st.sampled_from([None, TypeError, ConnectionRefusedError,
                                               ValueError]), max_size=6),
    quiet=st.sets(st.sampled_from(["mailgun", "postmark", "ses"])),
    concurrency=st.sampled_from([1, 3]),
)  # fmt: skip
def test_esp_fault_schedules_end_every_message_once(
    schedules: list[list[str]],
    size: int,
    delivery: str,
    post_send_errors: list[type[Exception] | None],
    quiet: set[str],
    concurrency: int,
) -> None:
    """Anymail's real Mailgun, Postmark and SES backends under random fault
    schedules, ``post_send`` receivers that raise after the ESP accepted, and
    leaves configured with ``fail_silently``: every message ends once, and
    what each fake ESP received (or may have received) is exactly what the
    router recorded."""
    from anymail.signals import post_send

    errors = list(post_send_errors)

    def audit(sender: Any, **kwargs: Any) -> None:
        error = errors.pop(0) if errors else None
        if error is not None:
            raise error("audit failed")

    with FakeESPServer(api_key=API_KEY) as mg, FakeESPServer(api_key=API_KEY) as pm, \
            FakeESPServer(api_key=API_KEY) as ses:  # fmt: skip
        servers = {"mailgun": mg, "postmark": pm, "ses": ses}
        for server, schedule in zip(servers.values(), schedules, strict=True):
            server.schedule = schedule
        leaves = {
            "mailgun": mailgun(mg, timeout=0.3),
            "postmark": postmark(pm, timeout=0.3),
            "ses": amazon_ses(ses, read_timeout=0.3),
        }
        for alias in quiet:
            leaves[alias]["OPTIONS"]["fail_silently"] = True
        options = {"routes": [{"mailers": list(leaves)}], "delivery": delivery,
                   "health": False, "concurrency": concurrency}  # fmt: skip
        post_send.connect(audit)
        try:
            with router_settings(leaves, options):
                batch = [msg(f"s{i}") for i in range(size)]
                router = make_router()
                router.fail_silently = True
                router.send_messages(batch)
        finally:
            post_send.disconnect(audit)
        for message in batch:
            mid = message.mailrouter_message_id
            attempts = message.mailrouter_attempts  # type: ignore[attr-defined]
            got = {alias: [r.message_id for r in s.messages].count(mid)
                   for alias, s in servers.items()}  # fmt: skip
            maybe = {alias: [r.message_id for r in s.maybe_delivered].count(mid)
                     for alias, s in servers.items()}  # fmt: skip
            expected_got = {alias: 0 for alias in servers}
            expected_maybe = {alias: 0 for alias in servers}
            for attempt in attempts:
                if attempt.outcome.value == "accepted":
                    expected_got[attempt.alias] += 1
                elif attempt.outcome.value == "uncertain":
                    expected_maybe[attempt.alias] += 1
            for alias in servers:
                # Each request the ESP saw is one the router recorded as
                # accepted or uncertain. An uncertain one may also have been
                # served "ok" (on a loaded machine the answer can come after
                # the client's read timeout): it is then in ``messages``.
                assert got[alias] + maybe[alias] == (
                    expected_got[alias] + expected_maybe[alias]
                ), attempts
                assert got[alias] >= expected_got[alias], attempts
            assert sum(expected_got.values()) == (1 if message.sent_using else 0)
            if delivery == "at_most_once":
                assert sum(got.values()) + sum(maybe.values()) <= 1
