"""The shop's routing expectations, written once, run by every flavour of its tests."""

from django.core import mail
from django.core.mail import EmailMessage, send_mail

from mailrouter import DeliveryError
from mailrouter.testing import mailer_fails


def outcomes(message: object) -> list[tuple[str, str]]:
    return [(a.alias, a.outcome.value) for a in message.mailrouter_attempts]  # type: ignore[attr-defined]


def eu_mail_goes_through_the_eu_relay() -> None:
    send_mail("Rechnung", "...", None, ["kunde@example.de"])
    send_mail("Receipt", "...", None, ["ann@example.com"])
    assert [m.sent_using for m in mail.outbox] == ["eu_smtp", "primary"]
    first = mail.outbox[0]
    assert first.mailrouter_route == "eu"
    assert first.mailrouter_status == "sent"
    assert outcomes(first) == [("eu_smtp", "accepted")]


def a_failing_mailer_fails_over() -> None:
    with mailer_fails("eu_smtp"):
        message = EmailMessage("Rechnung", "...", None, ["kunde@example.de"])
        message.send()
    assert [m.sent_using for m in mail.outbox] == ["eu_backup"]
    assert outcomes(mail.outbox[0]) == [("eu_smtp", "not_sent"), ("eu_backup", "accepted")]


def a_rejected_message_is_not_failed_over() -> None:
    with mailer_fails("primary", "rejected"):
        message = EmailMessage("Hi", "...", None, ["nobody@example.com"])
        try:
            message.send()
        except DeliveryError as error:
            assert "rejected" in str(error)
        else:
            raise AssertionError("DeliveryError expected")
    assert mail.outbox == []
    assert outcomes(message) == [("primary", "rejected")]


def the_breaker_opens_and_skips_the_dead_mailer() -> None:
    with mailer_fails("primary"):
        for _ in range(3):
            send_mail("Hi", "...", None, ["ann@example.com"])
    assert [m.sent_using for m in mail.outbox] == ["backup"] * 3
    assert outcomes(mail.outbox[2])[0][1] == "skipped"


ALL = [
    eu_mail_goes_through_the_eu_relay,
    a_failing_mailer_fails_over,
    a_rejected_message_is_not_failed_over,
    the_breaker_opens_and_skips_the_dead_mailer,
]
