"""Who may send an outbox row, and when: operator retries name the state they
saw, uncertain rows are queued again only by their own confirmed action, a
worker re-checks its claim immediately before the request, outcome writes
survive transient database errors, and at-least-once delivery reaches the
lease reclaim. Real SMTP servers and Anymail's real Mailgun backend against
the fake ESP, on the embedded database (PostgreSQL with real processes:
tests/test_outbox_postgres.py)."""

from __future__ import annotations

import datetime
import html
import io
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from anymail.signals import post_send, pre_send
from django.core import mail
from django.core.management import call_command
from django.db import OperationalError, connection
from django.utils import timezone

from mailrouter.outbox import operations
from mailrouter.outbox.claiming import STOPPED_RETRIED, claim, reclaim_expired
from mailrouter.outbox.models import OutboxMessage, RowStatus
from mailrouter.outbox.worker import drain
from mailrouter.signals import attempt_failed
from mailrouter.testing import FakeESPServer, FaultySMTPServer

from .esp_fixtures import mailgun
from .outbox_fixtures import outbox_settings
from .smtp_fixtures import smtp_mailer

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/mailrouter_outbox/outboxmessage/"


def send(subject: str = "Hello") -> OutboxMessage:
    assert mail.send_mail(subject, "body", "app@example.com", ["user@example.com"]) == 1
    return OutboxMessage.objects.order_by("-id")[0]


def make_due() -> None:
    OutboxMessage.objects.filter(status=RowStatus.QUEUED).update(next_attempt_at=timezone.now())


@pytest.fixture
def smtp_outbox(smtp_server: Callable[..., FaultySMTPServer]) -> Iterator[FaultySMTPServer]:
    server = smtp_server()
    with outbox_settings({"smtp": smtp_mailer(server)},
                         {"routes": [{"mailers": ["smtp"]}], "health": False},
                         {"retry": {"backoff": 60}}):
        yield server


@contextmanager
def receiver(signal: Any, handler: Callable[..., None]) -> Iterator[None]:
    signal.connect(handler, weak=False)
    try:
        yield
    finally:
        signal.disconnect(handler)


def became_uncertain_meanwhile(server: FaultySMTPServer, row: OutboxMessage) -> None:
    """A worker delivers the row; the mailer drops the connection after the
    body (it may have the message: a retry may deliver a second copy)."""
    server.mode = "drop_after_body"
    make_due()
    drain(once=True)
    row.refresh_from_db()
    assert row.status == RowStatus.UNCERTAIN
    server.mode = "accept"


# -- Operator retries ------------------------------------------------------------------


def test_the_admins_retry_moves_a_row_only_in_the_state_the_page_showed(
    smtp_outbox: FaultySMTPServer, client: Any, admin_user: Any
) -> None:
    row = send()
    OutboxMessage.objects.filter(pk=row.pk).update(  # backing off after a failure
        next_attempt_at=timezone.now() + datetime.timedelta(hours=1))
    client.force_login(admin_user)
    page = client.get(CHANGELIST).content.decode()
    seen = dict(re.findall(r'name="(mailrouter-seen-\d+)" value="(\w+)"', page))
    assert seen == {f"mailrouter-seen-{row.pk}": "queued"}
    became_uncertain_meanwhile(smtp_outbox, row)
    response = client.post(CHANGELIST, {"action": "retry_now", "index": 0,
                                        "_selected_action": [row.pk], **seen}, follow=True)
    assert "uncertain row(s) left alone" in response.content.decode()
    row.refresh_from_db()
    assert row.status == RowStatus.UNCERTAIN
    drain(once=True)
    assert smtp_outbox.messages == []


def test_queueing_an_uncertain_row_again_is_its_own_confirmed_admin_action(
    smtp_outbox: FaultySMTPServer, client: Any, admin_user: Any
) -> None:
    row = send()
    became_uncertain_meanwhile(smtp_outbox, row)
    client.force_login(admin_user)
    # The plain retry leaves it, even with no state seen (rows not on the page).
    client.post(CHANGELIST, {"action": "retry_now", "index": 0, "_selected_action": [row.pk]})
    assert OutboxMessage.objects.get(pk=row.pk).status == RowStatus.UNCERTAIN
    confirm = client.post(CHANGELIST, {"action": "retry_uncertain", "index": 0,
                                       "_selected_action": [row.pk]})
    page = confirm.content.decode()
    assert confirm.status_code == 200 and "second copy" in page
    assert html.escape(row.message_id) in page
    assert OutboxMessage.objects.get(pk=row.pk).status == RowStatus.UNCERTAIN
    # The confirmation page's own form.
    client.post(CHANGELIST, {"action": "retry_uncertain", "post": "yes",
                             "_selected_action": [row.pk]})
    assert OutboxMessage.objects.get(pk=row.pk).status == RowStatus.QUEUED


def test_the_retry_command_skips_uncertain_rows_unless_told_and_confirmed(
    smtp_outbox: FaultySMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    row, failed = send("uncertain"), send("failed")
    became_uncertain_meanwhile(smtp_outbox, row)
    OutboxMessage.objects.filter(pk=failed.pk).update(status=RowStatus.FAILED)
    out = io.StringIO()
    call_command("mailrouter", "outbox", "retry", str(row.pk), str(failed.pk), stdout=out)
    assert "queued 1 row(s)" in out.getvalue()
    assert f"left 1 uncertain row(s) alone: {row.pk}" in out.getvalue()
    assert "second copy" in out.getvalue()
    assert OutboxMessage.objects.get(pk=row.pk).status == RowStatus.UNCERTAIN
    monkeypatch.setattr(sys, "stdin", io.StringIO("no\n"))
    out = io.StringIO()
    call_command("mailrouter", "outbox", "retry", "--uncertain", str(row.pk), stdout=out)
    assert "nothing queued" in out.getvalue()
    assert OutboxMessage.objects.get(pk=row.pk).status == RowStatus.UNCERTAIN
    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))
    out = io.StringIO()
    call_command("mailrouter", "outbox", "retry", "--uncertain", str(row.pk), str(failed.pk),
                 stdout=out)
    assert "queued 1 uncertain row(s)" in out.getvalue()
    assert "1 no longer uncertain" in out.getvalue()  # the failed row was queued above
    assert OutboxMessage.objects.get(pk=row.pk).status == RowStatus.QUEUED


# -- The claim, checked just before the request -------------------------------------------


def another_worker_takes_the_row_back(row: OutboxMessage) -> None:
    """While the first worker is paused: its lease ends, another worker's poll
    marks the row uncertain, the operator (the mailer has nothing) queues it
    again, and a second worker delivers it."""
    later = timezone.now() + datetime.timedelta(seconds=400)
    assert [r.pk for r in reclaim_expired("default", now=later).uncertain] == [row.pk]
    assert operations.retry_uncertain(ids=[row.pk]) == 1
    drain(once=True, holder="worker-2")


def test_a_worker_paused_in_pre_send_past_its_lease_sends_nothing(
    esp: Callable[..., FakeESPServer],
) -> None:
    server = esp()
    paused: list[int] = []

    def pause(sender: Any, message: Any, esp_name: str, **kwargs: Any) -> None:
        if not paused:  # the first worker only
            (row,) = OutboxMessage.objects.filter(status=RowStatus.SENDING)
            paused.append(row.pk)
            another_worker_takes_the_row_back(row)

    with outbox_settings({"mailgun": mailgun(server)},
                         {"routes": [{"mailers": ["mailgun"]}], "health": False}):
        row = send()
        with receiver(pre_send, pause):
            stats = drain(once=True, holder="worker-1")
    assert stats.rows == {"lost": 1}
    assert [m.message_id for m in server.messages] == [row.message_id]
    row.refresh_from_db()
    assert (row.status, row.claimed_by, row.delivery_count) == (RowStatus.SENT, "worker-2", 2)


def test_failover_after_the_row_was_taken_back_sends_nothing(
    smtp_server: Callable[..., FaultySMTPServer],
) -> None:
    # An attempt_failed receiver (the primary refused) runs before the backup's request.
    primary, backup = smtp_server(), smtp_server()
    taken: list[int] = []

    def pause(sender: Any, message: Any, attempt: Any, **kwargs: Any) -> None:
        if not taken:
            (row,) = OutboxMessage.objects.filter(status=RowStatus.SENDING)
            taken.append(row.pk)
            primary.mode = "accept"
            another_worker_takes_the_row_back(row)

    with outbox_settings({"primary": smtp_mailer(primary), "backup": smtp_mailer(backup)},
                         {"routes": [{"mailers": ["primary", "backup"]}], "health": False}):
        row = send()
        primary.mode = "tempfail_rcpt"
        with receiver(attempt_failed, pause):
            drain(once=True, holder="worker-1")
    assert [m.message_id for m in primary.messages] == [row.message_id]
    assert backup.messages == []
    row.refresh_from_db()
    assert (row.status, row.sent_using, row.claimed_by) == (RowStatus.SENT, "primary", "worker-2")


def test_a_lease_that_ran_out_before_the_request_sends_nothing_and_requeues_the_row(
    esp: Callable[..., FakeESPServer],
) -> None:
    server = esp()

    def expire(sender: Any, message: Any, esp_name: str, **kwargs: Any) -> None:
        OutboxMessage.objects.update(lease_until=timezone.now() - datetime.timedelta(seconds=1))

    with outbox_settings({"mailgun": mailgun(server)},
                         {"routes": [{"mailers": ["mailgun"]}], "health": False}):
        row = send()
        with receiver(pre_send, expire):
            drain(once=True)
        row.refresh_from_db()
        assert server.messages == []
        assert (row.status, row.delivery_count) == (RowStatus.QUEUED, 1)
        assert "claim ended before the request" in row.last_error
        make_due()
        drain(once=True)
    assert [m.message_id for m in server.messages] == [row.message_id]


def test_an_outcome_that_can_no_longer_be_written_is_logged_at_error(
    esp: Callable[..., FakeESPServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = esp()
    taken: list[int] = []

    def taken_after_the_answer(sender: Any, message: Any, status: Any, esp_name: str,
                               **kwargs: Any) -> None:
        if taken:
            return
        taken.append(1)
        later = timezone.now() + datetime.timedelta(seconds=400)
        (row,) = reclaim_expired("default", now=later).uncertain
        operations.retry_uncertain(ids=[row.pk])

    with outbox_settings({"mailgun": mailgun(server)},
                         {"routes": [{"mailers": ["mailgun"]}], "health": False}):
        row = send()
        with receiver(post_send, taken_after_the_answer), caplog.at_level(logging.ERROR):
            drain(once=True)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"row {row.pk} ({row.message_id})" in text and "ended sent via mailgun" in text
               and "not recorded" in text for text in errors), errors


# -- Outcome writes and transient database errors -----------------------------------------


@contextmanager
def failing_writes(marker: str, times: int) -> Iterator[list[str]]:
    """The next ``times`` UPDATEs of the outbox table whose SQL contains
    ``marker`` fail as a reset connection does."""
    failed: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if (len(failed) < times and sql.startswith("UPDATE")
                and "mailrouter_outbox" in sql and marker in sql):
            failed.append(sql)
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield failed


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["accept", "tempfail_rcpt"])
def test_an_outcome_write_that_fails_is_tried_again_until_it_lands(
    smtp_outbox: FaultySMTPServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_outbox.mode = mode
    row = send()
    with failing_writes('"attempts"', times=3) as failed, caplog.at_level(logging.WARNING):
        drain(once=True)
    assert len(failed) == 3
    row.refresh_from_db()
    # The true outcome: sent, or queued for a retry (not stuck in sending,
    # later uncertain).
    expected = RowStatus.SENT if mode == "accept" else RowStatus.QUEUED
    assert (row.status, row.delivery_count) == (expected, 1)
    assert f"row {row.pk} ({row.message_id}): recording {expected} failed" in caplog.text
    assert len(smtp_outbox.messages) == (mode == "accept")


# -- At-least-once delivery and workers that stopped mid-send ------------------------------


@pytest.mark.parametrize("delivery", ["at_least_once", "at_most_once"])
def test_a_row_whose_worker_died_mid_send_is_retried_only_at_least_once(
    smtp_server: Callable[..., FaultySMTPServer], delivery: str
) -> None:
    server = smtp_server()
    with outbox_settings({"smtp": smtp_mailer(server)},
                         {"routes": [{"mailers": ["smtp"]}], "health": False,
                          "delivery": delivery},
                         {"retry": {"backoff": 0.001}}):
        row = send()
        assert len(claim("default", "dead-worker", 10, lease=30)) == 1
        # It died after its "sending" mark, before its request; the lease has ended.
        OutboxMessage.objects.filter(pk=row.pk).update(
            status=RowStatus.SENDING, delivery_count=1,
            lease_until=timezone.now() - datetime.timedelta(seconds=1))
        drain(once=True)
        row.refresh_from_db()
        if delivery == "at_most_once":
            assert (row.status, server.messages) == (RowStatus.UNCERTAIN, [])
            return
        assert row.last_error in ("", STOPPED_RETRIED)
        make_due()
        drain(once=True)
    row.refresh_from_db()
    assert (row.status, row.delivery_count) == (RowStatus.SENT, 2)
    assert [m.message_id for m in server.messages] == [row.message_id]
