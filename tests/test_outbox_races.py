"""Over random schedules of operators and workers racing one another, every
outbox row ends exactly once, and what each row records is what the servers
received: a copy of a Message-ID arrived exactly as many times as its row
records an accepted attempt (never twice, never silently).

While one worker delivers a row, at the moments a real worker can be paused
(Anymail's ``pre_send`` just before the request, an ``attempt_failed``
receiver before the next candidate, Anymail's ``post_send`` after the ESP
answered, before the outcome write), the rest of the world moves on: the
worker's lease runs out and another worker takes the row back and delivers
what is due; an operator retries the rows in the states a stale page showed,
re-queues uncertain rows the servers do not have (as a careful operator
does after checking), or cancels rows shown queued. Any outbox write (claim,
``sending`` mark, the claim check before the request, the outcome) may fail
once with a reset connection. Real SMTP server, Anymail's real Mailgun
backend against the fake ESP; the embedded database."""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
from anymail.signals import post_send, pre_send
from django.core import mail
from django.core.mail import EmailMessage
from django.db import OperationalError, connection
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailrouter.compat import HAS_MAILERS
from mailrouter.outbox import operations
from mailrouter.outbox.models import OutboxMessage, RowStatus
from mailrouter.outbox.worker import drain
from mailrouter.signals import attempt_failed
from mailrouter.testing import FakeESPServer, FaultySMTPServer

from .conftest import examples
from .esp_fixtures import mailgun
from .outbox_fixtures import outbox_settings
from .smtp_fixtures import smtp_mailer

pytestmark = pytest.mark.django_db(transaction=True)

SMTP_MODES = ["accept", "tempfail_rcpt", "reject_rcpt", "drop_after_body", "drop_before_data"]
#: Where an event happens: at one kind of hook, or at whichever fires next.
HOOKS = ["next", "pre_send", "attempt_failed", "post_send"]
ACTIONS = ["lease_runs_out", "retry_seen", "retry_uncertain", "cancel_seen", "nothing"]
#: SQL that tells each outbox write apart (all are UPDATEs of the table).
WRITES = {
    "claim": lambda sql: '"claimed_by"' in sql and '"attempts"' not in sql
    and '"delivery_started_at"' not in sql and 'SET "status"' in sql,
    "mark": lambda sql: '"delivery_started_at"' in sql,
    "check": lambda sql: 'SET "lease_until"' in sql,
    "outcome": lambda sql: '"attempts"' in sql,
}


@dataclass
class World:
    smtp: FaultySMTPServer
    esp: FakeESPServer
    #: (hook, actions): what happens while the worker is paused at that hook,
    #: taken in order as the hooks fire; after each action, another worker polls.
    events: list[tuple[str, list[str]]]
    #: Writes to fail once each, in order as they come.
    faults: list[str]
    #: The statuses a stale admin page showed (before the first worker ran).
    seen: dict[int, str] = field(default_factory=dict)
    depth: int = 0
    #: Faults apply to the outbox's own writes only, not to this test's
    #: stand-ins for time passing.
    armed: bool = True

    @contextmanager
    def time_passes(self) -> Iterator[None]:
        armed, self.armed = self.armed, False
        try:
            yield
        finally:
            self.armed = armed

    def received(self) -> Counter[str | None]:
        got: Counter[str | None] = Counter(m.message_id for m in self.smtp.messages)
        got.update(m.message_id for m in self.esp.messages)
        return got

    def hook(self, name: str) -> None:
        if self.depth or not self.events or self.events[0][0] not in ("next", name):
            return
        _, actions = self.events.pop(0)
        self.depth += 1
        try:
            for action in actions:
                self.act(action)
                worker_pass("other-worker")
        finally:
            self.depth -= 1

    def act(self, action: str) -> None:
        if action == "lease_runs_out":
            # This worker is paused past its lease; another worker polls.
            with self.time_passes():
                leases_end()
        elif action == "retry_seen":
            operations.retry(ids=list(self.seen), seen=self.seen)
        elif action == "retry_uncertain":
            # A careful operator: only rows whose Message-ID no server has.
            received = self.received()
            ids = [row.pk for row in OutboxMessage.objects.filter(status=RowStatus.UNCERTAIN)
                   if not received[row.message_id]]
            operations.retry_uncertain(ids=ids)
        elif action == "cancel_seen":
            operations.cancel(ids=[pk for pk, state in self.seen.items() if state == "queued"])

    @contextmanager
    def failing_writes(self) -> Iterator[None]:
        def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            if (self.armed and self.faults and sql.startswith("UPDATE")
                    and "mailrouter_outbox" in sql and WRITES[self.faults[0]](sql)):
                self.faults.pop(0)
                raise OperationalError("server closed the connection unexpectedly")
            return execute(sql, params, many, context)

        with connection.execute_wrapper(wrapper):
            yield


def worker_pass(holder: str) -> None:
    """One ``outbox-worker --once`` pass; a database error ends it, as it ends
    a poll of the loop (its claims come back when their leases end)."""
    with suppress(OperationalError):
        drain(once=True, holder=holder)


def leases_end() -> None:
    OutboxMessage.objects.filter(status__in=(RowStatus.CLAIMED, RowStatus.SENDING)).update(
        lease_until=timezone.now() - datetime.timedelta(seconds=1))


def settle_everything(world: World) -> None:
    """Time passes: every lease and backoff ends, and workers poll until
    nothing is due."""
    for _ in range(30):
        with world.time_passes():
            OutboxMessage.objects.filter(status=RowStatus.QUEUED).update(
                next_attempt_at=timezone.now())
            leases_end()
        worker_pass("last-worker")
        if not OutboxMessage.objects.filter(
            status__in=(RowStatus.QUEUED, RowStatus.CLAIMED, RowStatus.SENDING)
        ).exists():
            return
    raise AssertionError("rows still pending after 30 passes")


@contextmanager
def receivers(world: World) -> Iterator[None]:
    handlers: list[tuple[Any, Callable[..., None]]] = [
        (pre_send, lambda sender, **kw: world.hook("pre_send")),
        (attempt_failed, lambda sender, **kw: world.hook("attempt_failed")),
        (post_send, lambda sender, **kw: world.hook("post_send")),
    ]
    for signal, handler in handlers:
        signal.connect(handler, weak=False)
    try:
        yield
    finally:
        for signal, handler in handlers:
            signal.disconnect(handler)


@settings(max_examples=examples(50), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    schedule=st.lists(st.sampled_from(SMTP_MODES), max_size=8),
    size=st.integers(1, 4),
    events=st.lists(st.tuples(st.sampled_from(HOOKS),
                              st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=3)),
                    max_size=6),
    esp_first=st.booleans(),
    faults=st.lists(st.sampled_from(sorted(WRITES)), max_size=4),
)
# The issue's own scenarios, always run: paused before the request while the
# row is taken back and sent by another worker; a stale "queued" page retried
# after the send became uncertain; the outcome write hit by a reset connection.
@example(schedule=[], size=1, events=[("pre_send", ["lease_runs_out", "retry_uncertain"])],
         faults=[], esp_first=True)
@example(schedule=[], size=1, events=[("post_send", ["lease_runs_out", "retry_seen"])],
         faults=[], esp_first=True)
@example(schedule=[], size=1, events=[], faults=["outcome"], esp_first=False)
def test_racing_operators_paused_workers_and_database_errors_never_duplicate_or_lose(
    schedule: list[str], size: int,
    events: list[tuple[str, list[str]]], faults: list[str], esp_first: bool,
) -> None:
    OutboxMessage.objects.all().delete()
    with FaultySMTPServer() as smtp, FakeESPServer() as esp:
        smtp.schedule = schedule
        with outbox_settings(
            {"smtp": smtp_mailer(smtp), "esp": mailgun(esp)},
            {"routes": [{"mailers": ["esp", "smtp"] if esp_first else ["smtp", "esp"]}],
             "health": False},
            {"retry": {"max_attempts": 3, "backoff": 60}},
        ):
            connection_ = mail.mailers["default"] if HAS_MAILERS else mail.get_connection()  # type: ignore[attr-defined]
            batch = [EmailMessage(f"m{n}", "body", to=[f"u{n}@example.com"]) for n in range(size)]
            assert connection_.send_messages(batch) == size
            pks = list(OutboxMessage.objects.order_by("id").values_list("pk", flat=True))
            # The operator's page was shown before any worker ran: every row queued.
            world = World(smtp, esp, list(events), list(faults),
                          seen=dict.fromkeys(pks, "queued"))
            with receivers(world), world.failing_writes():
                worker_pass("worker-1")
                settle_everything(world)
        rows = list(OutboxMessage.objects.all())
        received = world.received()
    assert set(received) <= {row.message_id for row in rows}
    assert all(count == 1 for count in received.values()), f"received twice: {received}"
    for row in rows:
        assert row.status in (RowStatus.SENT, RowStatus.REJECTED, RowStatus.FAILED,
                              RowStatus.UNCERTAIN, RowStatus.CANCELLED), row.status
        accepted = [a for a in row.attempts if a["outcome"] == "accepted"]
        # What the row records is what the servers received.
        assert received[row.message_id] == len(accepted), (row.status, row.attempts)
        if row.status == RowStatus.SENT:
            assert len(accepted) == 1 and accepted[0]["alias"] == row.sent_using
            got = smtp.messages if row.sent_using == "smtp" else esp.messages
            assert [m.message_id for m in got].count(row.message_id) == 1
        else:
            assert not accepted
