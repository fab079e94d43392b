"""The outbox on the embedded database (SQLite) with real local SMTP servers:
enqueue in the caller's transaction, deliver by the router's outcomes."""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter import MessageStatus
from mailrouter.compat import HAS_MAILERS
from mailrouter.errors import ConfigurationError
from mailrouter.outbox import OutboxBackend, signals
from mailrouter.outbox.claiming import STOPPED_MID_SEND, claim, reclaim_expired
from mailrouter.outbox.deliver import RowDeliverer, decide
from mailrouter.outbox.models import OutboxMessage, RowStatus
from mailrouter.outbox.options import RetryPolicy
from mailrouter.outbox.payload import PayloadError
from mailrouter.outbox.worker import drain
from mailrouter.testing import FaultySMTPServer
from mailrouter.testing.settings import STYLES

from .conftest import examples
from .outbox_fixtures import outbox_settings
from .smtp_fixtures import smtp_mailer

pytestmark = pytest.mark.django_db


@pytest.fixture(params=STYLES)
def outbox(
    request: pytest.FixtureRequest, smtp_server: Callable[..., FaultySMTPServer]
) -> Iterator[Callable[..., tuple[FaultySMTPServer, FaultySMTPServer]]]:
    """``outbox(**outbox_options)`` → (primary, backup) SMTP servers behind
    a router behind the outbox, in the parametrized settings style."""
    contexts: list[Any] = []

    def apply(**options: Any) -> tuple[FaultySMTPServer, FaultySMTPServer]:
        primary, backup = smtp_server(), smtp_server()
        context = outbox_settings(
            {"primary": smtp_mailer(primary), "backup": smtp_mailer(backup)},
            {"routes": [{"mailers": ["primary", "backup"]}], "health": False},
            options,
            style=request.param,
        )
        context.__enter__()
        contexts.append(context)
        return primary, backup

    yield apply
    while contexts:
        contexts.pop().__exit__(None, None, None)


def send(subject: str = "Hello", to: str = "user@example.com") -> int:
    return mail.send_mail(subject, "body", "app@example.com", [to])


def only_row() -> OutboxMessage:
    (row,) = OutboxMessage.objects.all()
    return row


def test_send_mail_stores_one_row_and_contacts_no_mailer(outbox: Any) -> None:
    primary, backup = outbox()
    assert send() == 1
    row = only_row()
    assert row.status == RowStatus.QUEUED
    assert row.recipients == "user@example.com"
    assert primary.connections_opened == backup.connections_opened == 0
    assert row.payload["headers"] == [["Message-ID", row.message_id]]


def test_the_row_commits_or_rolls_back_with_the_callers_data(outbox: Any) -> None:
    outbox()
    with pytest.raises(RuntimeError), transaction.atomic():
        send("rolled back")
        raise RuntimeError("the view failed")
    assert not OutboxMessage.objects.exists()
    with transaction.atomic():
        send("committed")
    assert only_row().subject == "committed"


def test_a_batch_is_one_insert(outbox: Any) -> None:
    outbox()
    messages = [EmailMessage(f"m{n}", "b", to=[f"u{n}@example.com"]) for n in range(5)]
    messages.append(EmailMessage("nobody", "b"))
    with CaptureQueriesContext(connection) as queries:
        stored = mail.get_connection().send_messages(messages)
    assert stored == 5
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    rows = OutboxMessage.objects.order_by("id")
    assert [m.outbox_id for m in messages[:5]] == [r.pk for r in rows]  # type: ignore[attr-defined]


def test_oversized_message_is_refused_at_enqueue_and_nothing_of_the_batch_stored(
    outbox: Any,
) -> None:
    outbox(max_payload_bytes=2000)
    small = EmailMessage("small", "b", to=["a@example.com"])
    big = EmailMessage("big", "b", to=["a@example.com"])
    big.attach("big.bin", b"x" * 5000, "application/octet-stream")
    with pytest.raises(PayloadError, match=r"max_payload_bytes.*nothing of this batch"):
        mail.get_connection().send_messages([small, big])
    assert not OutboxMessage.objects.exists()


def test_worker_delivers_with_the_message_id_fixed_at_enqueue(outbox: Any) -> None:
    primary, _ = outbox()
    message = EmailMessage("Hi", "body", to=["user@example.com"])
    message.send()
    enqueued_id = message.mailrouter_message_id
    # Fixed in the row, not in the caller's headers.
    assert message.extra_headers == {} and only_row().message_id == enqueued_id
    sent: list[OutboxMessage] = []
    signals.row_sent.connect(lambda sender, row, **kw: sent.append(row), weak=False)
    try:
        out = io.StringIO()
        call_command("mailrouter", "outbox-worker", "--once", stdout=out)
    finally:
        signals.row_sent.receivers.clear()
    assert "sent 1" in out.getvalue()
    (received,) = primary.messages
    assert received.message_id == enqueued_id
    row = only_row()
    assert (row.status, row.sent_using, row.delivery_count) == (RowStatus.SENT, "primary", 1)
    assert [a["outcome"] for a in row.attempts] == ["accepted"]
    assert [r.pk for r in sent] == [row.pk]


def test_not_sent_fails_over_inside_one_delivery(outbox: Any) -> None:
    primary, backup = outbox()
    primary.mode = "tempfail_connect"
    send()
    drain(once=True)
    row = only_row()
    assert (row.status, row.sent_using) == (RowStatus.SENT, "backup")
    assert [(a["alias"], a["outcome"]) for a in row.attempts] == [
        ("primary", "not_sent"), ("backup", "accepted")
    ]
    assert len(backup.messages) == 1


def test_failed_delivery_is_retried_later_then_given_up(outbox: Any) -> None:
    primary, backup = outbox(retry={"max_attempts": 2, "backoff": 60})
    primary.mode = backup.mode = "tempfail_rcpt"
    send()
    failed: list[OutboxMessage] = []
    signals.row_failed.connect(lambda sender, row, **kw: failed.append(row), weak=False)
    try:
        drain(once=True)
        row = only_row()
        assert (row.status, row.delivery_count) == (RowStatus.QUEUED, 1)
        wait = (row.next_attempt_at - timezone.now()).total_seconds()
        assert 25 <= wait <= 60
        drain(once=True)  # not due yet: nothing happens
        assert only_row().delivery_count == 1
        OutboxMessage.objects.update(next_attempt_at=timezone.now())
        drain(once=True)
    finally:
        signals.row_failed.receivers.clear()
    row = only_row()
    assert (row.status, row.delivery_count) == (RowStatus.FAILED, 2)
    assert len(row.attempts) == 4
    # Both deliveries, every attempt: the row's one Message-ID.
    assert {a["message_id"] for a in row.attempts} == {row.message_id}
    assert "450" in row.last_error
    assert [r.pk for r in failed] == [row.pk]
    assert not primary.messages and not backup.messages


def test_rejected_is_final_and_never_retried(outbox: Any) -> None:
    primary, backup = outbox()
    primary.mode = "reject_rcpt"
    send()
    drain(once=True)
    row = only_row()
    assert row.status == RowStatus.REJECTED
    assert [a["alias"] for a in row.attempts] == ["primary"]
    assert backup.connections_opened == 0


def test_uncertain_is_final_and_not_resent(outbox: Any) -> None:
    primary, backup = outbox()
    primary.mode = "drop_after_body"
    send()
    uncertain: list[OutboxMessage] = []
    signals.row_uncertain.connect(lambda sender, row, **kw: uncertain.append(row), weak=False)
    try:
        drain(once=True)
    finally:
        signals.row_uncertain.receivers.clear()
    row = only_row()
    assert row.status == RowStatus.UNCERTAIN
    assert backup.connections_opened == 0
    assert [r.pk for r in uncertain] == [row.pk]


def test_expired_leases_requeue_unstarted_rows_and_make_started_ones_uncertain(
    outbox: Any,
) -> None:
    primary, _ = outbox()
    send("started")
    send("not started")
    started, waiting = claim("default", "dead-worker", 10, lease=30)
    # The dead worker had committed the "sending" mark of its first row only.
    OutboxMessage.objects.filter(pk=started.pk).update(status=RowStatus.SENDING)
    assert reclaim_expired("default").requeued == 0  # leases still running
    later = timezone.now() + datetime.timedelta(seconds=31)
    reclaimed = reclaim_expired("default", now=later)
    assert reclaimed.requeued == 1
    assert [r.pk for r in reclaimed.uncertain] == [started.pk]
    started.refresh_from_db()
    waiting.refresh_from_db()
    assert (started.status, started.claimed_by, started.last_error) == (
        RowStatus.UNCERTAIN, "dead-worker", STOPPED_MID_SEND
    )
    assert (waiting.status, waiting.claimed_by) == (RowStatus.QUEUED, "")
    drain(once=True)
    assert [m.parsed()["Subject"] for m in primary.messages] == ["not started"]


def test_a_worker_whose_claim_was_taken_back_sends_nothing(outbox: Any) -> None:
    primary, _ = outbox()
    send()
    (row,) = claim("default", "slow-worker", 10, lease=30)
    OutboxMessage.objects.update(status=RowStatus.QUEUED, claimed_by="")
    claim("default", "other-worker", 10, lease=30)
    assert RowDeliverer("default", "slow-worker").deliver(row, lease=30) is None
    assert primary.connections_opened == 0


STATUSES = st.sampled_from([*MessageStatus, None])


@settings(max_examples=examples(200), deadline=None)
@given(STATUSES, st.integers(1, 20), st.floats(0, 200000), st.booleans())
def test_decide_by_outcome(
    status: MessageStatus | None, deliveries: int, age: float, at_least_once: bool
) -> None:
    policy = RetryPolicy(max_attempts=10, backoff=30, max_backoff=3600, max_age=86400)
    decision = decide(status, deliveries, age, policy, at_least_once=at_least_once)
    retryable = status is MessageStatus.FAILED or (
        status is MessageStatus.UNCERTAIN and at_least_once
    )
    if status is MessageStatus.SENT:
        assert decision.status == RowStatus.SENT
    elif status in (MessageStatus.REJECTED, MessageStatus.NO_RECIPIENTS):
        assert decision.status == RowStatus.REJECTED
    elif not retryable:
        assert decision.status == RowStatus.UNCERTAIN
    elif deliveries >= 10 or age >= 86400:
        assert decision.status == RowStatus.FAILED
    else:
        assert decision.status == RowStatus.QUEUED
        full = min(3600, 30 * 2 ** (deliveries - 1))
        assert full / 2 <= decision.delay <= full


def test_outbox_command_counts_retries_and_purges(outbox: Any) -> None:
    outbox()
    for n in range(3):
        send(f"m{n}")
    first, second, third = OutboxMessage.objects.order_by("id")
    OutboxMessage.objects.filter(pk=first.pk).update(
        status=RowStatus.FAILED, finished_at=timezone.now() - datetime.timedelta(days=40)
    )
    OutboxMessage.objects.filter(pk=second.pk).update(
        status=RowStatus.SENT, finished_at=timezone.now() - datetime.timedelta(days=40)
    )
    out = io.StringIO()
    call_command("mailrouter", "outbox", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert summary["counts"]["queued"] == 1
    assert summary["counts"]["failed"] == summary["counts"]["sent"] == 1
    assert summary["oldest_queued_age"] >= 0
    call_command("mailrouter", "outbox", "retry", str(second.pk), stdout=io.StringIO())
    assert OutboxMessage.objects.get(pk=second.pk).status == RowStatus.SENT  # never resent
    call_command("mailrouter", "outbox", "retry", "--failed", stdout=io.StringIO())
    assert OutboxMessage.objects.get(pk=first.pk).status == RowStatus.QUEUED
    out = io.StringIO()
    call_command("mailrouter", "outbox", "purge", "--older-than", "30d", stdout=out)
    assert "deleted 1" in out.getvalue()
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {first.pk, third.pk}


def test_outbox_mailer_must_be_a_router(smtp_server: Callable[..., FaultySMTPServer]) -> None:
    server = smtp_server()
    with outbox_settings({"primary": smtp_mailer(server)}, {"routes": [{"mailers": ["primary"]}]},
                         style="legacy"), pytest.raises(ConfigurationError, match="retry"):
        OutboxBackend(retry={"max_attempts": 0})
    if "mailers" in STYLES:
        with outbox_settings({"primary": smtp_mailer(server)},
                             {"routes": [{"mailers": ["primary"]}]}):
            with pytest.raises(ConfigurationError, match=r"\['mailer'\].*'primary'.*RouterBackend"):
                OutboxBackend(alias="default", mailer="primary")
            with pytest.raises(ConfigurationError, match=r"\['mailer'\] is required"):
                OutboxBackend(alias="default")


def test_admin_lists_searches_and_retries_or_cancels_rows(outbox: Any, client: Any,
                                                          admin_user: Any) -> None:
    outbox()
    send("for ann", to="ann@example.com")
    send("for bob", to="bob@example.com")
    ann, bob = OutboxMessage.objects.order_by("id")
    OutboxMessage.objects.filter(pk=ann.pk).update(status=RowStatus.FAILED,
                                                   last_error="primary: not_sent 450")
    client.force_login(admin_user)
    url = "/admin/mailrouter_outbox/outboxmessage/"
    page = client.get(url, {"q": "ann@example.com"}).content.decode()
    assert "for ann" in page and "for bob" not in page
    page = client.get(url, {"q": bob.message_id}).content.decode()
    assert "for bob" in page and "for ann" not in page
    page = client.get(url, {"status__exact": "failed"}).content.decode()
    assert "for ann" in page and "primary: not_sent 450" in page and "for bob" not in page
    response = client.post(url, {"action": "retry_now", "_selected_action": [ann.pk, bob.pk]})
    assert response.status_code == 302
    assert OutboxMessage.objects.get(pk=ann.pk).status == RowStatus.QUEUED
    client.post(url, {"action": "cancel", "_selected_action": [bob.pk]})
    assert OutboxMessage.objects.get(pk=bob.pk).status == RowStatus.CANCELLED
    assert client.get(f"{url}{ann.pk}/change/").status_code == 200


def test_task_backend_wakes_delivery_after_commit(
    outbox: Any, django_capture_on_commit_callbacks: Any
) -> None:
    primary, _ = outbox(task_backend="default")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        send("woken")
        assert only_row().status == RowStatus.QUEUED  # nothing before the commit
    assert len(callbacks) == 1
    assert only_row().status == RowStatus.SENT
    assert [m.parsed()["Subject"] for m in primary.messages] == ["woken"]


def test_a_refused_wake_up_loses_nothing(
    outbox: Any, django_capture_on_commit_callbacks: Any, caplog: Any
) -> None:
    outbox(task_backend="default")
    with django_capture_on_commit_callbacks(execute=True):
        send()
        # The task framework breaks after the row was stored.
        broken = override_settings(TASKS={"default": {"BACKEND": "no.such.Backend"}})
        broken.enable()
    broken.disable()
    assert "could not enqueue deliver_outbox" in caplog.text
    assert only_row().status == RowStatus.QUEUED
    drain(once=True)
    assert only_row().status == RowStatus.SENT


def test_a_row_whose_mailer_cannot_be_built_is_retried_not_uncertain(outbox: Any) -> None:
    outbox()
    send()
    OutboxMessage.objects.update(mailer="gone" if HAS_MAILERS else "")
    broken = override_settings(MAILROUTER={"OPTIONS": {"routes": "not a list"}})
    broken.enable()
    try:
        drain(once=True)
    finally:
        broken.disable()
    row = only_row()
    assert (row.status, row.delivery_count) == (RowStatus.QUEUED, 1)
    assert "cannot build mailer" in row.last_error


def test_task_backend_must_exist(outbox: Any) -> None:
    outbox(task_backend="nope")
    with pytest.raises(ConfigurationError, match=r"\['task_backend'\]: 'nope'"):
        send()


def test_system_checks_report_bad_outbox_options(outbox: Any) -> None:
    from django.core import checks

    outbox(retry={"max_attempts": 0}, lease=-1)
    found = [m for m in checks.run_checks() if m.id == "mailrouter.E110"]
    assert len(found) == 2
    assert "['retry']['max_attempts'] must be a positive integer" in found[0].msg
    assert "['lease'] must be a positive number" in found[1].msg


def test_system_checks_check_the_legacy_outboxs_router(smtp_server: Any) -> None:
    from django.core import checks

    with outbox_settings({"primary": smtp_mailer(smtp_server())},
                         {"routes": [{"mailers": ["nope"]}]}, style="legacy"):
        found = [m.msg for m in checks.run_checks() if m.id == "mailrouter.E001"]
    assert any("'nope'" in msg for msg in found)


def test_the_poll_loop_survives_a_database_error(outbox: Any, monkeypatch: Any,
                                                  caplog: Any) -> None:
    import threading

    from django.db import OperationalError

    from mailrouter.outbox import worker

    outbox()
    send()
    stop = threading.Event()
    calls: list[int] = []
    real_claim = worker.claim

    def flaky_claim(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        claimed = real_claim(*args, **kwargs)
        if not claimed:
            stop.set()
        return claimed

    monkeypatch.setattr(worker, "claim", flaky_claim)
    monkeypatch.setattr(worker.connections["default"], "close", lambda: None)
    drain(stop=stop, poll_interval=0.01)
    assert "database error (OperationalError" in caplog.text
    assert only_row().status == RowStatus.SENT
    with pytest.raises(OperationalError):
        calls.clear()
        drain(once=True)


def test_the_backend_names_the_missing_app() -> None:
    from django.apps import apps

    import mailrouter.outbox

    with override_settings(INSTALLED_APPS=["mailrouter"]):
        assert not apps.is_installed("mailrouter.outbox")
        # Importable (Django's checks and ours import every BACKEND); not usable.
        backend = mailrouter.outbox.OutboxBackend
        with pytest.raises(ConfigurationError, match=r"'mailrouter\.outbox' in INSTALLED_APPS"):
            backend()


def test_a_router_that_raises_leaves_the_row_uncertain(outbox: Any, monkeypatch: Any) -> None:
    from mailrouter.backend import RouterBackend

    outbox()
    send()

    def broken(self: RouterBackend, messages: Any) -> int:
        raise RuntimeError("router bug after the hand-over, password=hunter22")

    monkeypatch.setattr(RouterBackend, "send_messages", broken)
    drain(once=True)
    row = only_row()
    assert row.status == RowStatus.UNCERTAIN
    assert "RuntimeError: router bug" in row.last_error
    assert "hunter22" not in row.last_error


def test_the_migrations_match_the_models() -> None:
    call_command("makemigrations", "mailrouter_outbox", "--check", "--dry-run",
                 stdout=io.StringIO())


def test_pins_and_anymail_attributes_reach_the_mailer(smtp_server: Any) -> None:
    from anymail.message import AnymailMessage

    from mailrouter.testing import FakeESPServer

    from .esp_fixtures import mailgun

    smtp = smtp_server()
    with FakeESPServer() as esp, outbox_settings(
        {"smtp": smtp_mailer(smtp), "mailgun": mailgun(esp)},
        {"routes": [{"mailers": ["smtp"]}], "health": False},
    ):
        message = AnymailMessage("Tagged", "body", to=["ann@example.com"],
                                 tags=["welcome"], metadata={"user_id": 42},
                                 track_clicks=True)
        message.mailers = ["mailgun"]  # type: ignore[attr-defined]
        message.send()
        drain(once=True)
        (received,) = esp.messages
    row = only_row()
    assert (row.status, row.sent_using) == (RowStatus.SENT, "mailgun")
    assert not smtp.messages
    assert received.message_id == row.message_id
    assert received.payload["o:tag"] == ["welcome"]
    assert received.payload["o:tracking-clicks"] == ["yes"]
    assert any("42" in str(value) for key, value in received.payload.items()
               if key.startswith("v:") or key == "h:X-Mailgun-Variables")


def test_the_router_commands_see_the_legacy_outboxs_router(smtp_server: Any) -> None:
    with outbox_settings({"primary": smtp_mailer(smtp_server())},
                         {"routes": [{"mailers": ["primary"]}], "health": False},
                         style="legacy"):
        out = io.StringIO()
        call_command("mailrouter", "status", "--json", stdout=out)
    assert [row["alias"] for row in json.loads(out.getvalue())["mailers"]] == ["primary"]


def test_each_delivery_is_logged(outbox: Any, caplog: Any) -> None:
    import logging

    primary, backup = outbox()
    primary.mode = backup.mode = "reject_rcpt"
    send()
    with caplog.at_level(logging.INFO, logger="mailrouter.outbox"):
        drain(once=True)
    [record] = [r for r in caplog.records if r.name == "mailrouter.outbox"]
    assert record.levelno == logging.WARNING
    assert f"row {only_row().pk} rejected (delivery 1): primary: rejected" in record.getMessage()


def test_the_routers_breakers_apply_to_outbox_deliveries(
    smtp_server: Callable[..., FaultySMTPServer],
) -> None:
    primary, backup = smtp_server(mode="tempfail_connect"), smtp_server()
    health = {"failure_threshold": 2, "failure_rate": None, "cooldown": 600}
    with outbox_settings({"primary": smtp_mailer(primary), "backup": smtp_mailer(backup)},
                         {"routes": [{"mailers": ["primary", "backup"]}], "health": health}):
        for n in range(5):
            send(f"m{n}")
        drain(once=True)
    rows = list(OutboxMessage.objects.order_by("id"))
    assert {row.sent_using for row in rows} == {"backup"}
    first_outcomes = [row.attempts[0]["outcome"] for row in rows]
    # Two failures open the primary's breaker; the later rows skip it.
    assert first_outcomes == ["not_sent", "not_sent", "skipped", "skipped", "skipped"]
    assert len(backup.messages) == 5
