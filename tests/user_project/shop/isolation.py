"""Expectations that hold only if routing state never leaks between tests nor
comes from the configured health cache, where the operator drained eu_smtp
(tests/test_user_project.py runs them in both orders)."""

from django.core import mail
from django.core.mail import send_mail

from mailrouter.testing import keep_routing, mailer_fails

from .expectations import outcomes


def the_breaker_opens_on_primary() -> None:
    with mailer_fails("primary"):
        for _ in range(3):
            send_mail("Hi", "...", None, ["ann@example.com"])
    assert outcomes(mail.outbox[2])[0] == ("primary", "skipped"), outcomes(mail.outbox[2])


def primary_takes_mail() -> None:
    # An open breaker left by another test would send this through "backup".
    send_mail("Hi", "...", None, ["ann@example.com"])
    assert [m.sent_using for m in mail.outbox] == ["primary"]


def an_operators_drain_is_not_seen() -> None:
    send_mail("Rechnung", "...", None, ["kunde@example.de"])
    assert [m.sent_using for m in mail.outbox] == ["eu_smtp"]


def shared_state_sees_the_operators_drain() -> None:
    with keep_routing(shared_state=True):
        send_mail("Rechnung", "...", None, ["kunde@example.de"])
    assert [m.sent_using for m in mail.outbox] == ["eu_backup"]
