"""Tests for the fault-injecting test servers in ``mailrouter.testing``.

Every fault mode is exercised with the *real* clients the router uses:
Django's SMTP backend (smtplib underneath) and anymail's Mailgun and Postmark
backends (requests underneath).  The assertions on exception types document
what each fault looks like from the client side, which is what the failure
classifier is built on.
"""

from __future__ import annotations

import contextlib
import http.client
import smtplib
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import django
import pytest
import requests
from django.conf import settings

if not settings.configured:  # when run without pytest-django
    settings.configure()
    django.setup()

from anymail.backends.mailgun import EmailBackend as MailgunBackend
from anymail.backends.postmark import EmailBackend as PostmarkBackend
from anymail.exceptions import AnymailAPIError, AnymailRequestsAPIError
from django.core.mail import EmailMessage
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from mailrouter.testing import (
    ESPFault,
    FakeESPServer,
    FaultySMTPServer,
    ReceivedMessage,
    SMTPFault,
)

CLIENT_TIMEOUT = 0.5


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def make_message(
    n: int = 0, to: tuple[str, ...] = ("rcpt@example.com",), body: str = "Hello\n"
) -> EmailMessage:
    return EmailMessage(
        subject=f"Subject {n}",
        body=body,
        from_email="Sender <sender@example.com>",
        to=list(to),
        headers={"Message-ID": f"<msg-{n}@mailrouter.test>"},
    )


def anymail_status(message: EmailMessage) -> Any:
    """The status anymail attaches to a sent message (untyped in the stubs)."""
    return message.anymail_status  # type: ignore[attr-defined]


def smtp_backend(server: FaultySMTPServer, **options: Any) -> SMTPBackend:
    # alias= makes Django 6.1 treat this as a configured mailer (no
    # deprecation warning for direct construction, no settings lookups).
    return SMTPBackend(
        host=server.host,
        port=server.port,
        timeout=CLIENT_TIMEOUT,
        alias="faulty-smtp",
        **options,
    )


def mailgun_backend(server: FakeESPServer, api_key: str = "key") -> MailgunBackend:
    return MailgunBackend(
        api_key=api_key,
        sender_domain="example.com",
        api_url=server.mailgun_api_url,
        timeout=CLIENT_TIMEOUT,
    )


def postmark_backend(server: FakeESPServer, api_key: str = "key") -> PostmarkBackend:
    return PostmarkBackend(
        server_token=api_key, api_url=server.postmark_api_url, timeout=CLIENT_TIMEOUT
    )


ESP_BACKENDS: dict[str, Callable[[FakeESPServer], Any]] = {
    "mailgun": mailgun_backend,
    "postmark": postmark_backend,
}


def send_smtp(server: FaultySMTPServer, message: EmailMessage, **options: Any) -> int:
    backend = smtp_backend(server, **options)
    try:
        return int(backend.send_messages([message]))
    finally:
        # Django keeps a half-open connection after a failed login; close it.
        backend.close()


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` plus everything reachable via __cause__/__context__/args/.reason."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return seen


def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    wait_until(lambda: not (set(threading.enumerate()) - before))


@pytest.fixture
def smtp_server(no_thread_leak: None) -> Iterator[FaultySMTPServer]:
    with FaultySMTPServer() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def esp_server(no_thread_leak: None) -> Iterator[FakeESPServer]:
    with FakeESPServer(api_key="key") as server:
        yield server
    assert server.errors == []


# ---------------------------------------------------------------------------
# SMTP: normal operation
# ---------------------------------------------------------------------------


def test_smtp_accepts_message_from_django_backend(smtp_server: FaultySMTPServer) -> None:
    body = "line one\n.leading dot\n..two dots\n.\nend\n"
    sent = send_smtp(smtp_server, make_message(7, to=("a@example.com", "b@example.org"), body=body))

    assert sent == 1
    [received] = smtp_server.messages
    assert isinstance(received, ReceivedMessage)
    assert received.mail_from == "sender@example.com"
    assert received.rcpt_tos == ("a@example.com", "b@example.org")
    assert received.message_id == "<msg-7@mailrouter.test>"
    # Dot-stuffing done by smtplib is undone by the server.
    assert received.parsed().get_content().replace("\r\n", "\n") == body
    assert b"\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n" in received.data
    assert smtp_server.connections_opened == 1
    assert smtp_server.transactions == 1
    assert smtp_server.applied_modes == [SMTPFault.ACCEPT]


def test_smtp_connection_reuse_counts_one_connection(smtp_server: FaultySMTPServer) -> None:
    backend = smtp_backend(smtp_server)
    with backend:
        assert backend.send_messages([make_message(i) for i in range(3)]) == 3
        assert backend.send_messages([make_message(3)]) == 1

    assert smtp_server.connections_opened == 1
    assert smtp_server.transactions == 4
    ids = [m.message_id for m in smtp_server.messages]
    assert ids == [f"<msg-{i}@mailrouter.test>" for i in range(4)]


def test_smtp_raw_commands_rset_noop_helo_quit(smtp_server: FaultySMTPServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=CLIENT_TIMEOUT) as client:
        assert client.helo("client.test")[0] == 250
        assert client.noop()[0] == 250
        assert client.mail("a@example.com")[0] == 250
        assert client.rcpt("dropped@example.com")[0] == 250
        assert client.rset()[0] == 250  # abandons the transaction
        assert client.docmd("DATA")[0] == 503  # no transaction any more
        assert client.docmd("BOGUS")[0] == 500
        client.sendmail("a@example.com", ["x@example.com"], b"Subject: one\r\n\r\nbody\r\n")
        client.sendmail("a@example.com", ["y@example.com"], b"Subject: two\r\n\r\nbody\r\n")
    assert [m.rcpt_tos for m in smtp_server.messages] == [("x@example.com",), ("y@example.com",)]
    assert smtp_server.messages[0].message_id is None
    assert smtp_server.transactions == 3
    assert smtp_server.connections_opened == 1


def test_smtp_concurrent_clients(smtp_server: FaultySMTPServer) -> None:
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            backend = smtp_backend(smtp_server)
            assert backend.send_messages([make_message(k * 10 + i) for i in range(3)]) == 3
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(smtp_server.wait_for(24, timeout=2)) == 24
    assert smtp_server.connections_opened == 8


def test_smtp_auth_plain_and_login(no_thread_leak: None) -> None:
    with FaultySMTPServer(username="user", password="s3cret") as server:
        # Django logs in with whatever mechanism smtplib prefers (PLAIN).
        assert send_smtp(server, make_message(), username="user", password="s3cret") == 1

        with smtplib.SMTP(server.host, server.port, timeout=CLIENT_TIMEOUT) as client:
            client.ehlo()
            assert client.has_extn("auth")
            assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
            # MAIL before AUTH is refused when credentials are configured.
            assert client.mail("a@example.com")[0] == 530
            client.user, client.password = "user", "s3cret"
            code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            assert code == 235

        with smtplib.SMTP(server.host, server.port, timeout=CLIENT_TIMEOUT) as client:
            client.ehlo()
            client.user, client.password = "user", "s3cret"
            assert client.auth("PLAIN", client.auth_plain, initial_response_ok=False)[0] == 235

        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            send_smtp(server, make_message(), username="user", password="wrong")
        assert excinfo.value.smtp_code == 535
        assert len(server.messages) == 1


def test_smtp_without_credentials_does_not_advertise_auth(smtp_server: FaultySMTPServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        assert not client.has_extn("auth")


def test_smtp_reject_recipients_partial_and_total(smtp_server: FaultySMTPServer) -> None:
    smtp_server.reject_recipients = {"*@blocked.example", "NOBODY@*"}

    # Partial refusal: smtplib reports it in sendmail's return value and
    # Django's backend silently counts the message as sent.
    message = make_message(1, to=("ok@example.com", "x@blocked.example", "nobody@example.com"))
    assert send_smtp(smtp_server, message) == 1
    assert smtp_server.messages[0].rcpt_tos == ("ok@example.com",)
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=CLIENT_TIMEOUT) as client:
        refused = client.sendmail(
            "a@example.com", ["ok@example.com", "y@Blocked.Example"], b"Subject: x\r\n\r\nx\r\n"
        )
    assert refused == {"y@Blocked.Example": (550, b"5.1.1 Recipient address rejected")}

    # Total refusal.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as excinfo:
        send_smtp(smtp_server, make_message(2, to=("z@blocked.example",)))
    assert excinfo.value.recipients == {
        "z@blocked.example": (550, b"5.1.1 Recipient address rejected")
    }
    assert len(smtp_server.messages) == 2


# ---------------------------------------------------------------------------
# SMTP: fault modes as seen through Django's SMTP backend
# ---------------------------------------------------------------------------

# mode -> (exception type, smtp code or None, message shown to the client contains)
SMTP_FAULTS: dict[SMTPFault, tuple[type[BaseException], int | None, str]] = {
    SMTPFault.REFUSE: (ConnectionRefusedError, None, "refused"),
    SMTPFault.HANG_GREETING: (smtplib.SMTPServerDisconnected, None, "timed out"),
    SMTPFault.TEMPFAIL_CONNECT: (smtplib.SMTPConnectError, 421, ""),
    SMTPFault.TEMPFAIL_RCPT: (smtplib.SMTPRecipientsRefused, None, ""),
    SMTPFault.REJECT_RCPT: (smtplib.SMTPRecipientsRefused, None, ""),
    SMTPFault.TEMPFAIL_DATA: (smtplib.SMTPDataError, 451, ""),
    SMTPFault.REJECT_DATA: (smtplib.SMTPDataError, 554, ""),
    SMTPFault.DROP_AFTER_BODY: (smtplib.SMTPServerDisconnected, None, "unexpectedly closed"),
    SMTPFault.DROP_BEFORE_DATA: (smtplib.SMTPServerDisconnected, None, "unexpectedly closed"),
    SMTPFault.HANG_AFTER_BODY: (smtplib.SMTPServerDisconnected, None, "timed out"),
    SMTPFault.AUTH_FAIL: (smtplib.SMTPAuthenticationError, 535, ""),
}


def test_every_smtp_fault_is_covered() -> None:
    assert set(SMTP_FAULTS) == set(SMTPFault) - {SMTPFault.ACCEPT}


@pytest.mark.parametrize("mode", list(SMTP_FAULTS), ids=str)
def test_smtp_fault_mode_with_django_backend(mode: SMTPFault, no_thread_leak: None) -> None:
    exc_type, code, text = SMTP_FAULTS[mode]
    with FaultySMTPServer(mode=mode, username="u", password="p") as server:
        started = time.monotonic()
        with pytest.raises(exc_type) as excinfo:
            send_smtp(server, make_message(), username="u", password="p")
        elapsed = time.monotonic() - started

        assert type(excinfo.value) is exc_type
        if code is not None:
            assert getattr(excinfo.value, "smtp_code", None) == code
        assert text in str(excinfo.value)
        # Timeouts surface as SMTPServerDisconnected with the TimeoutError as
        # __context__; the smtplib frame that failed tells the stage.
        timed_out = mode in (SMTPFault.HANG_GREETING, SMTPFault.HANG_AFTER_BODY)
        assert isinstance(excinfo.value.__context__, TimeoutError) == timed_out
        if mode in (SMTPFault.DROP_AFTER_BODY, SMTPFault.HANG_AFTER_BODY):
            frames = [f.name for f in traceback.extract_tb(excinfo.value.__traceback__)]
            assert frames[-2:] == ["data", "getreply"]
        rcpt_codes = {SMTPFault.TEMPFAIL_RCPT: {450}, SMTPFault.REJECT_RCPT: {550}}.get(mode)
        if rcpt_codes is not None:
            assert isinstance(excinfo.value, smtplib.SMTPRecipientsRefused)
            assert {c for c, _ in excinfo.value.recipients.values()} == rcpt_codes
        # Hangs last exactly as long as the client's timeout.
        assert elapsed < CLIENT_TIMEOUT + 0.4
        assert server.messages == []
        expected_conns = 0 if mode is SMTPFault.REFUSE else 1
        assert server.connections_opened == expected_conns
        # Modes that fail after MAIL FROM saw exactly one transaction.
        before_mail = {
            SMTPFault.REFUSE,
            SMTPFault.HANG_GREETING,
            SMTPFault.TEMPFAIL_CONNECT,
            SMTPFault.AUTH_FAIL,
        }
        assert server.transactions == (0 if mode in before_mail else 1)
        assert server.errors == []


def test_smtp_auth_fail_without_login_rejects_mail(smtp_server: FaultySMTPServer) -> None:
    # A server without credentials never sees AUTH; auth_fail then answers
    # MAIL FROM with 530, which smtplib reports as a refused sender.
    smtp_server.mode = "auth_fail"
    with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
        send_smtp(smtp_server, make_message())
    assert excinfo.value.smtp_code == 530


def test_smtp_faults_on_a_reused_connection(smtp_server: FaultySMTPServer) -> None:
    """Connection-phase faults resolved at MAIL FROM use their per-command form."""
    smtp_server.schedule = ["accept", "tempfail_connect"]
    backend = smtp_backend(smtp_server)
    with backend, pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
        backend.send_messages([make_message(1), make_message(2)])
    assert excinfo.value.smtp_code == 421
    assert len(smtp_server.messages) == 1

    smtp_server.schedule = ["accept", "drop_before_data"]
    with backend, pytest.raises(smtplib.SMTPServerDisconnected):
        backend.send_messages([make_message(3), make_message(4)])
    assert len(smtp_server.messages) == 2


# ---------------------------------------------------------------------------
# SMTP: schedules, accept_n_then, refuse/re-bind, lifecycle
# ---------------------------------------------------------------------------


def test_smtp_schedule_is_consumed_per_attempt(smtp_server: FaultySMTPServer) -> None:
    smtp_server.mode = SMTPFault.REJECT_DATA  # fallback once the schedule is empty
    smtp_server.schedule = [
        "tempfail_connect",
        "accept",
        "tempfail_rcpt",
        SMTPFault.DROP_AFTER_BODY,
        "accept",
    ]
    outcomes: list[str] = []
    for i in range(6):
        try:
            send_smtp(smtp_server, make_message(i))
            outcomes.append("sent")
        except smtplib.SMTPException as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes == [
        "SMTPConnectError",
        "sent",
        "SMTPRecipientsRefused",
        "SMTPServerDisconnected",
        "sent",
        "SMTPDataError",
    ]
    assert smtp_server.schedule == ()
    assert smtp_server.applied_modes == [
        SMTPFault.TEMPFAIL_CONNECT,
        SMTPFault.ACCEPT,
        SMTPFault.TEMPFAIL_RCPT,
        SMTPFault.DROP_AFTER_BODY,
        SMTPFault.ACCEPT,
        SMTPFault.REJECT_DATA,
    ]
    assert [m.message_id for m in smtp_server.messages] == [
        "<msg-1@mailrouter.test>",
        "<msg-4@mailrouter.test>",
    ]


def test_smtp_schedule_validation(smtp_server: FaultySMTPServer) -> None:
    with pytest.raises(ValueError):
        smtp_server.schedule = ["refuse"]
    with pytest.raises(ValueError):
        smtp_server.schedule = ["no_such_mode"]
    with pytest.raises(ValueError):
        smtp_server.mode = "no_such_mode"
    assert smtp_server.schedule == ()
    assert smtp_server.mode is SMTPFault.ACCEPT


def test_smtp_accept_n_then(smtp_server: FaultySMTPServer) -> None:
    smtp_server.accept_n_then(2, "tempfail_data")
    assert send_smtp(smtp_server, make_message(1)) == 1
    assert send_smtp(smtp_server, make_message(2)) == 1
    assert smtp_server.mode is SMTPFault.TEMPFAIL_DATA
    with pytest.raises(smtplib.SMTPDataError):
        send_smtp(smtp_server, make_message(3))
    assert len(smtp_server.messages) == 2

    smtp_server.accept_n_then(0, "reject_rcpt")
    # (str(): mypy would keep the narrowed mode from the assert above.)
    assert str(smtp_server.mode) == "reject_rcpt"


def test_smtp_accept_n_then_refuse_and_rebind_same_port(smtp_server: FaultySMTPServer) -> None:
    port = smtp_server.port
    smtp_server.accept_n_then(1, SMTPFault.REFUSE)
    assert send_smtp(smtp_server, make_message(1)) == 1
    assert smtp_server.mode is SMTPFault.REFUSE
    with pytest.raises(ConnectionRefusedError):
        send_smtp(smtp_server, make_message(2))

    smtp_server.mode = SMTPFault.ACCEPT
    assert smtp_server.port == port
    assert send_smtp(smtp_server, make_message(3)) == 1
    assert len(smtp_server.messages) == 2


def test_smtp_refuse_closes_listener_and_reused_connections(
    smtp_server: FaultySMTPServer,
) -> None:
    port = smtp_server.port
    backend = smtp_backend(smtp_server)
    backend.open()
    try:
        smtp_server.mode = "refuse"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((smtp_server.host, port), timeout=CLIENT_TIMEOUT)
        # The already-open connection is dropped at its next transaction.
        with pytest.raises(smtplib.SMTPServerDisconnected):
            backend.send_messages([make_message(1)])
    finally:
        backend.close()
    smtp_server.mode = "accept"
    assert smtp_server.port == port
    assert send_smtp(smtp_server, make_message(2)) == 1


def test_smtp_start_in_refuse_mode_keeps_port(no_thread_leak: None) -> None:
    with FaultySMTPServer(mode="refuse") as server:
        assert server.port != 0
        with pytest.raises(ConnectionRefusedError):
            send_smtp(server, make_message())
        server.mode = "accept"
        assert send_smtp(server, make_message()) == 1


def test_smtp_stop_is_fast_with_hung_clients(no_thread_leak: None) -> None:
    server = FaultySMTPServer(mode="hang_greeting").start()
    # Clients with no timeout at all: only the server can end these.
    hung = [socket.create_connection((server.host, server.port)) for _ in range(3)]
    wait_until(lambda: server.connections_opened == 3)

    server.mode = "hang_after_body"
    results: list[BaseException] = []

    def hung_sender() -> None:
        try:
            with smtplib.SMTP(server.host, server.port) as client:  # no timeout
                client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nx\r\n")
        except BaseException as exc:
            results.append(exc)

    sender = threading.Thread(target=hung_sender)
    sender.start()
    wait_until(lambda: server.transactions == 1)
    time.sleep(0.05)  # let the body arrive

    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    assert not server.running
    sender.join(2.0)
    assert not sender.is_alive()
    assert len(results) == 1 and isinstance(results[0], smtplib.SMTPServerDisconnected)
    for sock in hung:
        sock.settimeout(1.0)
        assert sock.recv(10) == b""  # the server closed it
        sock.close()
    server.stop()  # idempotent


def test_smtp_many_start_stop_cycles_leave_no_threads(no_thread_leak: None) -> None:
    for _ in range(30):
        with FaultySMTPServer() as server:
            socket.create_connection((server.host, server.port)).close()


def test_smtp_restart_rebinds_same_port(no_thread_leak: None) -> None:
    server = FaultySMTPServer().start()
    port = server.port
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, port), timeout=CLIENT_TIMEOUT)
    with server:
        assert server.port == port
        assert send_smtp(server, make_message()) == 1


def test_smtp_wait_for_times_out(smtp_server: FaultySMTPServer) -> None:
    with pytest.raises(TimeoutError):
        smtp_server.wait_for(1, timeout=0.05)


def test_smtp_mode_changes_are_thread_safe(smtp_server: FaultySMTPServer) -> None:
    stop = threading.Event()

    def flipper() -> None:
        modes = ["accept", "tempfail_data", "refuse", "reject_rcpt"]
        i = 0
        while not stop.is_set():
            smtp_server.mode = modes[i % len(modes)]
            i += 1

    threads = [threading.Thread(target=flipper) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            # Any fault is fine; the server must merely stay consistent.
            with contextlib.suppress(OSError):
                send_smtp(smtp_server, make_message(i))
    finally:
        stop.set()
        for t in threads:
            t.join()
    smtp_server.mode = "accept"
    assert send_smtp(smtp_server, make_message(99)) == 1
    assert smtp_server.errors == []


# Faults that fail fast enough for a property test (no hangs).
_FAST_SMTP_FAULTS = [
    m
    for m in SMTPFault
    if m not in (SMTPFault.REFUSE, SMTPFault.HANG_GREETING, SMTPFault.HANG_AFTER_BODY)
]


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=st.lists(st.sampled_from(_FAST_SMTP_FAULTS), max_size=6))
def test_smtp_random_schedules_deliver_exactly_the_accepted(schedule: list[SMTPFault]) -> None:
    with FaultySMTPServer(username="u", password="p") as server:
        server.schedule = schedule
        delivered = []
        for i in range(len(schedule)):
            try:
                send_smtp(server, make_message(i), username="u", password="p")
                delivered.append(f"<msg-{i}@mailrouter.test>")
            except smtplib.SMTPException:
                pass
        assert server.schedule == ()
        assert server.applied_modes == schedule
        assert [m.message_id for m in server.messages] == delivered
        assert len(delivered) == schedule.count(SMTPFault.ACCEPT)


# ---------------------------------------------------------------------------
# ESP: normal operation with anymail's real backends
# ---------------------------------------------------------------------------


def test_mailgun_ok_is_recorded(esp_server: FakeESPServer) -> None:
    message = make_message(5, to=("Rcpt One <one@example.com>", "two@example.com"))
    message.cc = ["cc@example.com"]
    assert mailgun_backend(esp_server).send_messages([message]) == 1

    [received] = esp_server.messages
    assert received.esp == "mailgun"
    assert received.path == "/v3/example.com/messages"
    assert received.to == ("one@example.com", "two@example.com")
    assert received.cc == ("cc@example.com",)
    assert received.from_email == "Sender <sender@example.com>"
    assert received.subject == "Subject 5"
    assert received.message_id == "<msg-5@mailrouter.test>"
    assert received.auth_header_present
    assert anymail_status(message).message_id == received.esp_message_id
    assert received.esp_message_id.endswith("@example.com>")
    assert b"Subject+5" in received.raw_body  # form-urlencoded without attachments
    assert esp_server.requests_seen == 1
    assert esp_server.maybe_delivered == []


def test_mailgun_multipart_with_attachment(esp_server: FakeESPServer) -> None:
    message = make_message(6)
    message.attach("note.txt", "attached text", "text/plain")
    assert mailgun_backend(esp_server).send_messages([message]) == 1
    [received] = esp_server.messages
    assert received.message_id == "<msg-6@mailrouter.test>"
    assert received.to == ("rcpt@example.com",)
    assert b"attached text" in received.raw_body


def test_postmark_ok_is_recorded(esp_server: FakeESPServer) -> None:
    message = make_message(8, to=("A <a@example.com>", "b@example.com"))
    assert postmark_backend(esp_server).send_messages([message]) == 1

    [received] = esp_server.messages
    assert received.esp == "postmark"
    assert received.path == "/email"
    assert received.to == ("a@example.com", "b@example.com")
    assert received.message_id == "<msg-8@mailrouter.test>"
    assert received.payload["Subject"] == "Subject 8"
    assert received.auth_header_present
    status = anymail_status(message)
    assert status.message_id == received.esp_message_id
    assert status.recipients["a@example.com"].status == "sent"


def test_postmark_batch_endpoints(esp_server: FakeESPServer) -> None:
    # merge_metadata makes anymail use /email/batch (one JSON object per "to").
    message = make_message(9, to=("a@example.com", "b@example.com"))
    message.merge_metadata = {"a@example.com": {"k": "1"}, "b@example.com": {"k": "2"}}  # type: ignore[attr-defined]
    assert postmark_backend(esp_server).send_messages([message]) == 1
    assert [(m.path, m.to) for m in esp_server.messages] == [
        ("/email/batch", ("a@example.com",)),
        ("/email/batch", ("b@example.com",)),
    ]
    ids = {r.message_id for r in anymail_status(message).recipients.values()}
    assert ids == {m.esp_message_id for m in esp_server.messages}

    response = requests.post(
        f"{esp_server.base_url}/email/batch",
        json=[{"From": "s@example.com", "To": "x@example.com", "Subject": "s"}],
        headers={"X-Postmark-Server-Token": "key"},
        timeout=CLIENT_TIMEOUT,
    )
    assert response.status_code == 200
    [result] = response.json()
    assert result["ErrorCode"] == 0 and result["To"] == "x@example.com"


def test_esp_keep_alive_reuses_one_connection(esp_server: FakeESPServer) -> None:
    backend = postmark_backend(esp_server)
    with backend:
        for i in range(3):
            assert backend.send_messages([make_message(i)]) == 1
    assert esp_server.connections_opened == 1
    assert esp_server.requests_seen == 3
    assert len(esp_server.wait_for(3, timeout=1)) == 3


@pytest.mark.parametrize("esp", ["mailgun", "postmark"])
def test_esp_wrong_api_key_is_401_and_consumes_nothing(esp_server: FakeESPServer, esp: str) -> None:
    esp_server.schedule = ["ok"]
    backend = mailgun_backend(esp_server, "bad") if esp == "mailgun" else None
    backend = backend or postmark_backend(esp_server, "bad")
    with pytest.raises(AnymailAPIError) as excinfo:
        backend.send_messages([make_message()])
    assert excinfo.value.status_code == 401
    assert esp_server.schedule == (ESPFault.OK,)
    assert esp_server.requests_seen == 1
    assert esp_server.messages == []


def test_esp_without_api_key_accepts_anything(no_thread_leak: None) -> None:
    with FakeESPServer() as server:
        response = requests.post(
            f"{server.base_url}/email",
            json={"From": "s@example.com", "To": "x@example.com"},
            timeout=CLIENT_TIMEOUT,
        )
        assert response.status_code == 200
        [received] = server.messages
        assert not received.auth_header_present
        assert requests.get(f"{server.base_url}/nope", timeout=CLIENT_TIMEOUT).status_code == 404
        assert server.requests_seen == 2


# ---------------------------------------------------------------------------
# ESP: fault modes as seen through anymail
# ---------------------------------------------------------------------------

# mode -> HTTP status anymail reports (None: no HTTP response at all)
ESP_STATUS: dict[ESPFault, int | None] = {
    ESPFault.ERROR_500: 500,
    ESPFault.ERROR_503: 503,
    ESPFault.RATE_LIMITED_429: 429,
    ESPFault.BAD_REQUEST_400: 400,
    ESPFault.UNAUTHORIZED_401: 401,
    ESPFault.FORBIDDEN_403: 403,
    ESPFault.UNPROCESSABLE_422: 422,
    ESPFault.GARBAGE_2XX: 200,
    ESPFault.BAD_GATEWAY_502: 502,
    ESPFault.GATEWAY_TIMEOUT_504: 504,
    ESPFault.READ_TIMEOUT: None,
    ESPFault.DROP: None,
    ESPFault.REFUSE: None,
}


#: Covered through the router in tests/test_exactly_once_holes.py (their
#: Anymail errors differ per ESP, or they need a TLS server).
ESP_FAULTS_TESTED_ELSEWHERE = {ESPFault.ODD_2XX, ESPFault.TLS_BREAK}


def test_every_esp_fault_is_covered() -> None:
    assert set(ESP_STATUS) | ESP_FAULTS_TESTED_ELSEWHERE == set(ESPFault) - {ESPFault.OK}


@pytest.mark.parametrize("esp", ["mailgun", "postmark"])
@pytest.mark.parametrize("mode", list(ESP_STATUS), ids=str)
def test_esp_fault_mode_with_anymail(esp: str, mode: ESPFault, no_thread_leak: None) -> None:
    with FakeESPServer(api_key="key", mode=mode) as server:
        started = time.monotonic()
        with pytest.raises(AnymailRequestsAPIError) as excinfo:
            ESP_BACKENDS[esp](server).send_messages([make_message(1)])
        elapsed = time.monotonic() - started
        error = excinfo.value

        status = ESP_STATUS[mode]
        assert getattr(error, "status_code", None) == status
        # Transport-level failures are *also* the underlying requests error.
        assert isinstance(error, requests.exceptions.ReadTimeout) == (mode is ESPFault.READ_TIMEOUT)
        assert isinstance(error, requests.exceptions.ConnectionError) == (
            mode in (ESPFault.DROP, ESPFault.REFUSE)
        )
        if mode is ESPFault.GARBAGE_2XX:
            assert "Invalid JSON" in str(error)
        # "refuse" (never delivered) and "drop" (maybe delivered) are both
        # requests.ConnectionError; the chained low-level error tells them apart.
        chain = exception_chain(error)
        assert any(isinstance(e, ConnectionRefusedError) for e in chain) == (
            mode is ESPFault.REFUSE
        )
        assert any(isinstance(e, http.client.RemoteDisconnected) for e in chain) == (
            mode is ESPFault.DROP
        )
        if status is not None and status != 200:
            assert error.response is not None
            body = error.response.json()
            assert ("message" in body) if esp == "mailgun" else ("ErrorCode" in body)
        assert elapsed < CLIENT_TIMEOUT + 0.4

        assert server.messages == []
        maybe = mode in (
            ESPFault.READ_TIMEOUT,
            ESPFault.GARBAGE_2XX,
            ESPFault.DROP,
            ESPFault.BAD_GATEWAY_502,
            ESPFault.GATEWAY_TIMEOUT_504,
        )
        assert [m.message_id for m in server.maybe_delivered] == (
            ["<msg-1@mailrouter.test>"] if maybe else []
        )
        assert server.requests_seen == (0 if mode is ESPFault.REFUSE else 1)
        assert server.errors == []


def test_esp_retry_after_header(no_thread_leak: None) -> None:
    with FakeESPServer(mode="rate_limited_429", retry_after=7) as server:
        response = requests.post(
            f"{server.base_url}/email",
            json={"From": "s@example.com", "To": "x@example.com"},
            timeout=CLIENT_TIMEOUT,
        )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"


def test_esp_schedule_and_fallback(esp_server: FakeESPServer) -> None:
    esp_server.mode = "error_503"
    esp_server.schedule = ["ok", "drop", "ok"]
    backend = mailgun_backend(esp_server)
    outcomes: list[int | str | None] = []
    for i in range(4):
        try:
            backend.send_messages([make_message(i)])
            outcomes.append("sent")
        except AnymailAPIError as exc:
            outcomes.append(getattr(exc, "status_code", None))
    assert outcomes == ["sent", None, "sent", 503]
    assert esp_server.schedule == ()
    assert [m.message_id for m in esp_server.messages] == [
        "<msg-0@mailrouter.test>",
        "<msg-2@mailrouter.test>",
    ]
    assert [m.message_id for m in esp_server.maybe_delivered] == ["<msg-1@mailrouter.test>"]
    with pytest.raises(ValueError):
        esp_server.schedule = ["refuse"]


def test_esp_accept_n_then(esp_server: FakeESPServer) -> None:
    esp_server.accept_n_then(2, ESPFault.ERROR_500)
    backend = postmark_backend(esp_server)
    assert backend.send_messages([make_message(1)]) == 1
    assert backend.send_messages([make_message(2)]) == 1
    assert esp_server.mode is ESPFault.ERROR_500
    with pytest.raises(AnymailAPIError):
        backend.send_messages([make_message(3)])
    assert len(esp_server.messages) == 2


def test_esp_refuse_rebinds_same_port_and_drops_keep_alive(esp_server: FakeESPServer) -> None:
    port = esp_server.port
    backend = postmark_backend(esp_server)
    with backend:  # one requests session with a pooled keep-alive connection
        assert backend.send_messages([make_message(1)]) == 1
        esp_server.mode = "refuse"
        with pytest.raises(requests.exceptions.ConnectionError):
            backend.send_messages([make_message(2)])
        esp_server.mode = "ok"
        assert esp_server.port == port
        assert backend.send_messages([make_message(3)]) == 1

    esp_server.accept_n_then(1, "refuse")
    assert postmark_backend(esp_server).send_messages([make_message(4)]) == 1
    with pytest.raises(requests.exceptions.ConnectionError):
        postmark_backend(esp_server).send_messages([make_message(5)])
    esp_server.mode = "ok"
    assert esp_server.port == port
    assert len(esp_server.messages) == 3


def test_esp_stop_is_fast_with_hung_client(no_thread_leak: None) -> None:
    server = FakeESPServer(mode="read_timeout").start()
    results: list[BaseException] = []

    def hung_client() -> None:
        try:  # no client timeout: only the server can end this
            requests.post(
                f"{server.base_url}/email", json={"From": "s@example.com", "To": "x@e.com"}
            )
        except BaseException as exc:
            results.append(exc)

    client = threading.Thread(target=hung_client)
    client.start()
    wait_until(lambda: len(server.maybe_delivered) == 1)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    client.join(2.0)
    assert not client.is_alive()
    assert len(results) == 1 and isinstance(results[0], requests.exceptions.ConnectionError)
    server.stop()  # idempotent


def test_esp_many_start_stop_cycles_leave_no_threads(no_thread_leak: None) -> None:
    for _ in range(30):
        with FakeESPServer() as server:
            socket.create_connection((server.host, server.port)).close()
