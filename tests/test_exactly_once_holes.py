"""Regressions for the exactly-once holes of issue #13, against real backends:
Anymail's Mailgun, Postmark and Amazon SES backends over HTTP(S) to the fake
ESP server, Django's SMTP backend to a real local SMTP server.

Each attempt is judged by what may have left the process, never by the
exception type alone."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from django.core.mail import EmailMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter.outcomes import MessageStatus
from mailrouter.testing import FakeESPServer
from mailrouter.testing.settings import router_settings

from .conftest import examples, make_router
from .esp_fixtures import API_KEY, amazon_ses, mailgun, mailgun_then_smtp, postmark
from .messages import kinds, msg, send
from .smtp_fixtures import smtp_mailer

# -- 1. Errors after the ESP accepted: judged by the stage, not the type ------------------


@pytest.mark.parametrize(
    "raised",
    [
        TypeError("audit log: bad value"),
        ConnectionRefusedError(111, "audit database refused"),
        ValueError("audit log: bad value"),
    ],
)
def test_a_post_send_receiver_error_after_acceptance_is_not_a_failure(
    configure: Any, esp: Callable[..., FakeESPServer], smtp_server: Any, raised: Exception
) -> None:
    from anymail.signals import post_send

    primary, backup, relay = esp(), esp(), smtp_server()
    router = configure(
        {"mailgun": mailgun(primary), "postmark": postmark(backup), "smtp": smtp_mailer(relay)},
        {"routes": [{"mailers": ["mailgun", "postmark", "smtp"]}]},
    )

    def audit(sender: Any, **kwargs: Any) -> None:
        raise raised

    post_send.connect(audit)
    try:
        message = msg()
        assert router.send_messages([message]) == 1
    finally:
        post_send.disconnect(audit)
    assert kinds(message) == [("mailgun", "accepted")]
    note = message.mailrouter_attempts[0].error  # type: ignore[attr-defined]
    assert note is not None and type(raised).__name__ in note
    assert [r.message_id for r in primary.messages] == [message.mailrouter_message_id]
    assert backup.requests_seen == 0 and relay.transactions == 0


@pytest.mark.parametrize("body", [None, 1, True, "OK"])
def test_a_postmark_2xx_with_an_odd_body_is_uncertain_and_not_resent(
    configure: Any, esp: Callable[..., FakeESPServer], body: Any
) -> None:
    primary, backup = esp(mode="odd_2xx"), esp()
    primary.odd_body = body
    router = configure(
        {"postmark": postmark(primary), "mailgun": mailgun(backup)},
        {"routes": [{"mailers": ["postmark", "mailgun"]}]},
    )
    message = msg()
    error = send(router, message)
    assert kinds(message) == [("postmark", "uncertain")]
    assert error is not None and error.failures[0].status is MessageStatus.UNCERTAIN
    assert len(primary.maybe_delivered) == 1 and backup.requests_seen == 0


def test_a_pre_send_error_is_judged_by_its_type_nothing_left(
    configure: Any, esp: Callable[..., FakeESPServer]
) -> None:
    """Before the request, a TypeError proves only that this mailer could not
    build it: the next mailer is tried."""
    from anymail.signals import pre_send

    primary, backup = esp(), esp()
    router = configure(
        {"mailgun": mailgun(primary), "postmark": postmark(backup)},
        {"routes": [{"mailers": ["mailgun", "postmark"]}]},
    )

    def broken(sender: Any, **kwargs: Any) -> None:
        if sender.__module__.endswith("mailgun"):
            raise TypeError("cannot build this payload")

    pre_send.connect(broken)
    try:
        message = msg()
        assert router.send_messages([message]) == 1
    finally:
        pre_send.disconnect(broken)
    assert kinds(message) == [("mailgun", "incompatible"), ("postmark", "accepted")]
    assert primary.requests_seen == 0


# -- 2. TLS errors: connecting vs reading the response -------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.mark.parametrize(("trusted", "expected"), [(True, "uncertain"), (False, "not_sent")])
def test_a_tls_error_is_judged_by_when_it_happened(
    configure: Any,
    esp: Callable[..., FakeESPServer],
    certificate: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    trusted: bool,
    expected: str,
) -> None:
    """Trusted: the handshake works, the whole request is written, then the TLS
    stream breaks while the response is read: the ESP may have the message.
    Untrusted: certificate verification fails in the handshake: nothing left."""
    if trusted:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate[0])
    else:
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    primary, backup = esp(mode="tls_break", tls=certificate), esp()
    router = configure(
        {"mailgun": mailgun(primary), "postmark": postmark(backup)},
        {"routes": [{"mailers": ["mailgun", "postmark"]}]},
    )
    message = msg()
    send(router, message)
    attempt = message.mailrouter_attempts[0]  # type: ignore[attr-defined]
    assert "SSLError" in str(attempt.error)
    if expected == "uncertain":
        assert kinds(message) == [("mailgun", "uncertain")]
        assert len(primary.maybe_delivered) == 1 and backup.requests_seen == 0
    else:
        assert kinds(message) == [("mailgun", "not_sent"), ("postmark", "accepted")]
        assert primary.requests_seen == 0


@pytest.mark.parametrize(("trusted", "expected"), [(True, "uncertain"), (False, "not_sent")])
def test_a_tls_error_through_boto3_is_judged_by_when_it_happened(
    configure: Any,
    esp: Callable[..., FakeESPServer],
    certificate: tuple[str, str],
    trusted: bool,
    expected: str,
) -> None:
    """The same through boto3's own urllib3 connections (Anymail's Amazon SES)."""
    primary, backup = esp(mode="tls_break", tls=certificate), esp()
    ses = amazon_ses(primary)
    ses["OPTIONS"]["client_params"]["verify"] = certificate[0] if trusted else True
    router = configure(
        {"ses": ses, "postmark": postmark(backup)},
        {"routes": [{"mailers": ["ses", "postmark"]}]},
    )
    message = msg()
    send(router, message)
    assert "SSL" in str(message.mailrouter_attempts[0].error)  # type: ignore[attr-defined]
    if expected == "uncertain":
        assert kinds(message) == [("ses", "uncertain")]
        assert len(primary.maybe_delivered) == 1 and backup.requests_seen == 0
    else:
        assert kinds(message) == [("ses", "not_sent"), ("postmark", "accepted")]
        assert primary.requests_seen == 0


# -- 3 and 9. Per-recipient answers ---------------------------------------------------------


def ses_bulk(*recipients: str) -> EmailMessage:
    message = EmailMessage("", "", "app@example.com", list(recipients))
    message.template_id = "welcome"  # type: ignore[attr-defined]
    message.merge_data = {r: {"name": r.split("@")[0]} for r in recipients}  # type: ignore[attr-defined]
    return message


@pytest.mark.parametrize(
    ("item_errors", "expected", "named"),
    [
        (["MESSAGE_REJECTED", "ACCOUNT_THROTTLED"], "not_sent", ["a@example.com", "b@example.com"]),
        ([None, "ACCOUNT_THROTTLED"], "accepted", ["b@example.com (failed: ACCOUNT_THROTTLED)"]),
        (["ACCOUNT_THROTTLED", "ACCOUNT_THROTTLED"], "not_sent", ["ACCOUNT_THROTTLED"]),
        (["MESSAGE_REJECTED", "MESSAGE_REJECTED"], "rejected", ["MESSAGE_REJECTED"]),
    ],
)  # fmt: skip
def test_amazon_ses_bulk_results_are_read_per_recipient(
    configure: Any,
    esp: Callable[..., FakeESPServer],
    item_errors: list[str | None],
    expected: str,
    named: list[str],
) -> None:
    primary, backup = esp(), esp()
    primary.item_errors = item_errors
    router = configure(
        {"ses": amazon_ses(primary), "mailgun": mailgun(backup)},
        {"routes": [{"mailers": ["ses", "mailgun"]}]},
    )
    message = ses_bulk("a@example.com", "b@example.com")
    send(router, message)
    first = message.mailrouter_attempts[0]  # type: ignore[attr-defined]
    assert first.outcome.value == expected, first
    assert first.error is not None and all(name in first.error for name in named), first.error
    accepted = [r.to for r in primary.messages]
    if expected == "accepted":
        assert kinds(message) == [("ses", "accepted")] and accepted == [("a@example.com",)]
        assert backup.requests_seen == 0
    elif expected == "not_sent":
        assert kinds(message) == [("ses", "not_sent"), ("mailgun", "accepted")]
        assert accepted == []
    else:
        assert kinds(message) == [("ses", "rejected")] and backup.requests_seen == 0


@pytest.mark.parametrize(
    ("item_errors", "expected"),
    [
        ([{"ErrorCode": 405, "Message": "You have run out of credits."}] * 2, "not_sent"),
        ([{"ErrorCode": 100, "Message": "Maintenance"}] * 2, "not_sent"),
        ([None, {"ErrorCode": 405, "Message": "You have run out of credits."}], "accepted"),
    ],
)
def test_a_postmark_batch_that_fails_inside_a_200_is_read_per_item(
    configure: Any, esp: Callable[..., FakeESPServer], item_errors: list[Any], expected: str
) -> None:
    primary, backup = esp(), esp()
    primary.item_errors = item_errors
    router = configure(
        {"postmark": postmark(primary), "mailgun": mailgun(backup)},
        {"routes": [{"mailers": ["postmark", "mailgun"]}]},
    )
    message = EmailMessage("", "", "app@example.com", ["a@example.com", "b@example.com"])
    message.template_id = "welcome"  # type: ignore[attr-defined]
    message.merge_data = {"a@example.com": {"name": "A"}, "b@example.com": {"name": "B"}}  # type: ignore[attr-defined]
    send(router, message)
    first = message.mailrouter_attempts[0]  # type: ignore[attr-defined]
    assert first.outcome.value == expected and first.error is not None
    assert "b@example.com (ErrorCode 405" in first.error or "ErrorCode 100" in first.error
    if expected == "accepted":
        assert kinds(message) == [("postmark", "accepted")] and backup.requests_seen == 0
        assert [r.to for r in primary.messages] == [("a@example.com",)]
    else:
        assert kinds(message) == [("postmark", "not_sent"), ("mailgun", "accepted")]
        assert primary.messages == []


def test_a_batch_send_never_fails_over_to_a_mailer_that_would_merge_its_recipients(
    configure: Any, esp: Callable[..., FakeESPServer], smtp_server: Any
) -> None:
    primary, relay = esp(mode="error_503"), smtp_server()
    router = mailgun_then_smtp(configure, primary, relay)
    message = msg("Hi %recipient.name%", to=("a@example.com", "b@example.com"))
    message.merge_data = {"a@example.com": {"name": "A"}, "b@example.com": {"name": "B"}}  # type: ignore[attr-defined]
    error = send(router, message)
    assert kinds(message) == [("mailgun", "not_sent"), ("smtp", "incompatible")]
    assert "merge_data" in str(message.mailrouter_attempts[1].error)  # type: ignore[attr-defined]
    assert error is not None and error.failures[0].status is MessageStatus.FAILED
    assert relay.transactions == 0


def test_an_anymail_message_without_batch_features_still_fails_over_to_smtp(
    configure: Any, esp: Callable[..., FakeESPServer], smtp_server: Any
) -> None:
    from anymail.message import AnymailMessage

    primary, relay = esp(mode="error_503"), smtp_server()
    router = mailgun_then_smtp(configure, primary, relay)
    message = AnymailMessage("Hi", "Body", "app@example.com", ["a@example.com"], tags=["t"])
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("mailgun", "not_sent"), ("smtp", "accepted")]
    assert relay.transactions == 1


@pytest.mark.parametrize("mode", ["bad_gateway_502", "gateway_timeout_504"])
def test_a_gateway_error_may_follow_a_stored_message(
    configure: Any, esp: Callable[..., FakeESPServer], mode: str
) -> None:
    primary, backup = esp(mode=mode), esp()
    router = configure(
        {"mailgun": mailgun(primary), "postmark": postmark(backup)},
        {"routes": [{"mailers": ["mailgun", "postmark"]}]},
    )
    message = msg()
    send(router, message)
    assert kinds(message) == [("mailgun", "uncertain")] and backup.requests_seen == 0


# -- 5. Leaves configured with fail_silently ------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("error_503", "not_sent"), ("read_timeout", "uncertain"), ("drop", "uncertain")],
)
def test_an_anymail_leaf_with_fail_silently_is_still_judged_by_stage(
    configure: Any, esp: Callable[..., FakeESPServer], mode: str, expected: str
) -> None:
    primary, backup = esp(mode=mode), esp()
    quiet = mailgun(primary, timeout=0.5)
    quiet["OPTIONS"]["fail_silently"] = True
    router = configure(
        {"mailgun": quiet, "postmark": postmark(backup)},
        {"routes": [{"mailers": ["mailgun", "postmark"]}]},
    )
    message = msg()
    send(router, message)
    if expected == "not_sent":
        assert kinds(message) == [("mailgun", "not_sent"), ("postmark", "accepted")]
    else:
        assert kinds(message) == [("mailgun", "uncertain")] and backup.requests_seen == 0


def test_an_smtp_leaf_with_fail_silently_dropping_after_the_body_is_uncertain(
    configure: Any, smtp_server: Any
) -> None:
    primary, backup = smtp_server(), smtp_server()
    primary.mode = "drop_after_body"
    quiet = smtp_mailer(primary)
    quiet["OPTIONS"]["fail_silently"] = True
    router = configure(
        {"primary": quiet, "backup": smtp_mailer(backup)},
        {"routes": [{"mailers": ["primary", "backup"]}]},
    )
    message = msg()
    send(router, message)
    assert kinds(message) == [("primary", "uncertain")]
    assert backup.transactions == 0


def test_a_legacy_connection_that_fails_silently_is_judged_by_the_stage_it_reached(
    smtp_server: Any,
) -> None:
    """The caller's own connection object is not the router's to reconfigure,
    but the stage watched on it still tells what may have left. (Legacy style:
    a connection object built without MAILERS.)"""
    from django.core.mail.backends.smtp import EmailBackend

    primary, backup = smtp_server(), smtp_server()
    primary.mode = "drop_after_body"
    options = {"routes": [{"mailers": ["backup"]}]}
    with router_settings({"backup": smtp_mailer(backup)}, options, style="legacy"):
        router = make_router()
        message = msg()
        message.connection = EmailBackend(  # type: ignore[attr-defined]
            host=primary.host, port=primary.port, timeout=2, fail_silently=True
        )
        send(router, message)
    assert [k for _alias, k in kinds(message)] == ["uncertain"]
    assert backup.transactions == 0


# -- Property: per-recipient answers over random SES bulk results ---------------------------

SES_STATUSES = [None, None, "ACCOUNT_THROTTLED", "MESSAGE_REJECTED", "TRANSIENT_FAILURE",
                "MAIL_FROM_DOMAIN_NOT_VERIFIED"]  # fmt: skip
PRECEDENCE = ["uncertain", "not_sent", "incompatible", "rejected"]


@settings(
    max_examples=examples(15),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(results=st.lists(st.sampled_from(SES_STATUSES), min_size=1, max_size=4))
def test_ses_bulk_results_decide_the_attempt_recipient_by_recipient(
    results: list[str | None],
) -> None:
    """Whatever SES answers per destination: accepted iff any destination
    succeeded (only those are delivered, the rest named in the note); else the
    most cautious outcome of the failures, and the batch fails over only then."""
    from mailrouter.leafkinds.boto import SES_BULK_STATUSES

    recipients = [f"r{i}@example.com" for i in range(len(results))]
    with FakeESPServer(api_key=API_KEY) as ses, FakeESPServer(api_key=API_KEY) as backup:
        ses.item_errors = list(results)
        leaves = {"ses": amazon_ses(ses), "mailgun": mailgun(backup)}
        with router_settings(leaves, {"routes": [{"mailers": ["ses", "mailgun"]}],
                                      "health": False}):  # fmt: skip
            router = make_router()
            router.fail_silently = True
            message = ses_bulk(*recipients)
            router.send_messages([message])
        first = message.mailrouter_attempts[0]  # type: ignore[attr-defined]
        succeeded = [r for r, e in zip(recipients, results, strict=True) if e is None]
        assert [m.to[0] for m in ses.messages] == succeeded
        if succeeded:
            assert kinds(message) == [("ses", "accepted")] and backup.requests_seen == 0
            refused = [r for r in recipients if r not in succeeded]
            assert all(r in str(first.error) for r in refused)
            assert (first.error is None) == (not refused)
        else:
            outcomes = {SES_BULK_STATUSES[str(e)].value for e in results}
            expected = next(o for o in PRECEDENCE if o in outcomes)
            assert first.outcome.value == expected
            fails_over = expected in ("not_sent", "incompatible")
            assert kinds(message)[1:] == ([("mailgun", "accepted")] if fails_over else [])
            assert [m.message_id for m in backup.messages] == (
                [message.mailrouter_message_id] if fails_over else []
            )


class OpaqueAdapter:
    """A transport adapter the router cannot look into (no urllib3 pool manager)."""

    def __init__(self) -> None:
        import requests.adapters

        self._inner = requests.adapters.HTTPAdapter()

    def send(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.send(*args, **kwargs)

    def close(self) -> None:
        self._inner.close()


def __getattr__(name: str) -> Any:
    """``tests.test_exactly_once_holes.OpaqueMailgun``: built on first use, so
    importing this module does not import Anymail."""
    if name != "OpaqueMailgun":
        raise AttributeError(name)
    from anymail.backends.mailgun import EmailBackend

    class OpaqueMailgun(EmailBackend):  # type: ignore[misc]
        def create_session(self) -> Any:
            session = super().create_session()
            session.mount("http://", OpaqueAdapter())
            return session

    globals()[name] = OpaqueMailgun
    return OpaqueMailgun


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("ok", ["accepted"]), ("refuse", ["not_sent", "accepted"]), ("drop", ["uncertain"]),
     ("error_503", ["not_sent", "accepted"])],
)  # fmt: skip
def test_an_unwatched_transport_is_judged_conservatively(
    configure: Any,
    esp: Callable[..., FakeESPServer],
    mode: str,
    expected: list[str],
) -> None:
    """Connections the router cannot watch: only errors proving the request
    never left (connection refused) or the ESP's own answer fail over."""
    primary, backup = esp(mode=mode), esp()
    leaf = mailgun(primary)
    leaf["BACKEND"] = f"{__name__}.OpaqueMailgun"
    router = configure(
        {"mailgun": leaf, "postmark": postmark(backup)},
        {"routes": [{"mailers": ["mailgun", "postmark"]}]},
    )
    message = msg()
    send(router, message)
    assert [k for _alias, k in kinds(message)] == expected
