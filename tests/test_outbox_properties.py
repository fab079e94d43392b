"""Over random fault schedules at two real SMTP servers and random retry
budgets, every outbox row ends exactly once, whatever number of deliveries it
took: sent (received exactly once, by the mailer recorded), rejected or failed
(received by no one), or uncertain (received at most once) — and no
Message-ID is ever received twice."""

from __future__ import annotations

from collections import Counter

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter.compat import HAS_MAILERS
from mailrouter.outbox.models import OutboxMessage, RowStatus
from mailrouter.outbox.worker import drain
from mailrouter.testing import FaultySMTPServer

from .conftest import examples
from .outbox_fixtures import outbox_settings
from .smtp_fixtures import smtp_mailer

pytestmark = pytest.mark.django_db
MODES = ["accept", "tempfail_connect", "tempfail_rcpt", "reject_rcpt", "tempfail_data",
         "reject_data", "drop_after_body", "drop_before_data"]


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    schedules=st.lists(st.lists(st.sampled_from(MODES), max_size=10), min_size=2, max_size=2),
    size=st.integers(1, 6),
    max_attempts=st.integers(1, 3),
)
def test_every_row_ends_exactly_once(
    schedules: list[list[str]], size: int, max_attempts: int
) -> None:
    OutboxMessage.objects.all().delete()
    with FaultySMTPServer() as first, FaultySMTPServer() as second:
        servers = {"first": first, "second": second}
        first.schedule, second.schedule = schedules
        with outbox_settings(
            {alias: smtp_mailer(server) for alias, server in servers.items()},
            {"routes": [{"mailers": list(servers)}], "health": False},
            {"retry": {"max_attempts": max_attempts, "backoff": 60}},
        ):
            connection = mail.mailers["default"] if HAS_MAILERS else mail.get_connection()  # type: ignore[attr-defined]
            batch = [EmailMessage(f"m{n}", "body", to=[f"u{n}@example.com"]) for n in range(size)]
            assert connection.send_messages(batch) == size
            for _ in range(max_attempts):
                drain(once=True)
                # The backoff has passed.
                OutboxMessage.objects.filter(status=RowStatus.QUEUED).update(
                    next_attempt_at=timezone.now()
                )
        rows = list(OutboxMessage.objects.all())
        received = Counter(m.message_id for s in servers.values() for m in s.messages)
        assert all(count == 1 for count in received.values()), received
        assert set(received) <= {row.message_id for row in rows}
        for row in rows:
            assert row.status in (RowStatus.SENT, RowStatus.REJECTED, RowStatus.FAILED,
                                  RowStatus.UNCERTAIN), row.status
            outcomes = [a["outcome"] for a in row.attempts]
            assert 1 <= row.delivery_count <= max_attempts
            if row.status == RowStatus.SENT:
                assert outcomes[-1] == "accepted" and outcomes.count("accepted") == 1
                got = [m.message_id for m in servers[row.sent_using].messages]
                assert got.count(row.message_id) == 1
            elif row.status == RowStatus.UNCERTAIN:
                assert outcomes[-1] == "uncertain"
                assert received[row.message_id] <= 1
            else:
                assert received[row.message_id] == 0 and "accepted" not in outcomes
                if row.status == RowStatus.FAILED:
                    assert row.delivery_count == max_attempts
                else:
                    assert outcomes[-1] == "rejected"
            # Retried deliveries never follow an uncertain or rejected outcome.
            assert "uncertain" not in outcomes[:-1] and "rejected" not in outcomes[:-1]
