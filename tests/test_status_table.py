"""The text of ``manage.py mailrouter status``: a long LAST ERROR loses its middle,
not the innermost cause at its end; a breaker whose cooldown is over says its probe
is due (or under way) instead of a retry time in the past.

Errors come from Anymail's real Mailgun backend against a fake ESP server that
refuses connections; the backup is Django's SMTP backend and a real local server.
"""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO

from django.core.mail import EmailMessage
from django.core.management import call_command
from hypothesis import given
from hypothesis import strategies as st

from mailrouter import Attempt
from mailrouter.backend import RouterBackend
from mailrouter.health.monitor import format_time
from mailrouter.health.store import store_for
from mailrouter.report import elide
from mailrouter.testing import FakeESPServer, FaultySMTPServer

from .esp_fixtures import mailgun
from .health_fixtures import FakeClock
from .smtp_fixtures import smtp_mailer

HEALTH = {"failure_threshold": 1, "failure_rate": None, "cooldown": 60,
          "clock": "tests.health_fixtures.CLOCK"}
REFUSED = "ConnectionRefusedError: [Errno 111] Connection refused"


def status_rows() -> dict[str, tuple[str, str, str]]:
    """alias → (its whole line, its STATE cell, its LAST ERROR cell)."""
    out = StringIO()
    call_command("mailrouter", "status", stdout=out)
    header, *lines = out.getvalue().splitlines()
    state_at, failures_at = header.index("STATE"), header.index("FAILURES")
    error_at = header.index("LAST ERROR")
    return {line.split()[0]: (line, line[state_at:failures_at].strip(), line[error_at:])
            for line in lines if line and not line.startswith("note:")}


def send(router: RouterBackend) -> list[Attempt]:
    message = EmailMessage("s", "b", "app@example.com", ["u@example.com"])
    router.send_messages([message])
    return list(message.mailrouter_attempts)  # type: ignore[attr-defined]


def mailgun_down(configure: Callable[..., RouterBackend], esp: Callable[..., FakeESPServer],
                 smtp_server: Callable[..., FaultySMTPServer]) -> tuple[RouterBackend, Attempt]:
    """A router whose Mailgun refused one message (its breaker is open), with that attempt."""
    router = configure(
        {"mailgun": mailgun(esp(mode="refuse")), "smtp": smtp_mailer(smtp_server())},
        {"routes": [{"mailers": ["mailgun", "smtp"]}], "health": HEALTH},
    )
    refused, accepted = send(router)
    assert accepted.alias == "smtp" and accepted.outcome.value == "accepted"
    return router, refused


def test_a_long_last_error_keeps_its_innermost_cause(
    configure: Callable[..., RouterBackend], esp: Callable[..., FakeESPServer],
    smtp_server: Callable[..., FaultySMTPServer], clock: FakeClock,
) -> None:
    _, refused = mailgun_down(configure, esp, smtp_server)
    assert refused.error is not None and refused.error.endswith(REFUSED)
    assert len(refused.error) > 100  # too long for the column
    line, _, error = status_rows()["mailgun"]
    assert error.startswith(f"{format_time(clock())} not_sent: Error posting to http://")
    assert error.endswith(f" … {REFUSED}"), line
    assert len(error) <= 120, line


def test_a_breaker_past_its_cooldown_says_its_probe_is_due(
    configure: Callable[..., RouterBackend], esp: Callable[..., FakeESPServer],
    smtp_server: Callable[..., FaultySMTPServer], clock: FakeClock,
) -> None:
    router, _ = mailgun_down(configure, esp, smtp_server)
    retry_at = format_time(clock() + 60)
    assert status_rows()["mailgun"][1] == f"open (retry {retry_at})"
    clock.advance(61)
    assert status_rows()["mailgun"][1] == "half_open (probe due)"
    store = store_for(router.config.health_settings)
    generation = store.read(["mailgun"], router.config.health_settings.policy,
                            clock())["mailgun"].breaker.generation
    assert store.acquire_probe("mailgun", generation, "web-1:4242", 30)
    assert status_rows()["mailgun"][1] == "half_open (probe under way)"


@given(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="…"), max_size=300),
       st.integers(min_value=0, max_value=200))
def test_elide_fits_the_width_and_keeps_both_ends(text: str, width: int) -> None:
    line = " ".join(text.split())
    shown = elide(text, width)
    assert len(shown) <= width
    if len(line) <= width:
        assert shown == line
    elif width >= 24:
        start, _, end = shown.partition(" … ")
        assert line.startswith(start) and line.endswith(end)
        assert len(start) >= (width - 3) // 3 - 10 and len(end) >= 2 * (width - 3) // 3 - 10
