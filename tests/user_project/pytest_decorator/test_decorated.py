"""keep_routing on a plain pytest class and on test functions, with and
without parentheses."""

from django.core import mail
from django.core.mail import send_mail
from shop import expectations

from mailrouter.testing import keep_routing


@keep_routing
class TestDecoratedClass:
    def test_eu_mail_goes_through_the_eu_relay(self) -> None:
        expectations.eu_mail_goes_through_the_eu_relay()

    def test_a_failing_mailer_fails_over(self) -> None:
        expectations.a_failing_mailer_fails_over()


@keep_routing()
def test_function_decorator() -> None:
    expectations.a_rejected_message_is_not_failed_over()


@keep_routing
def test_bare_function_decorator() -> None:
    expectations.eu_mail_goes_through_the_eu_relay()


def test_without_keep_routing_django_bypasses_the_router() -> None:
    send_mail("Rechnung", "...", None, ["kunde@example.de"])
    assert not hasattr(mail.outbox[0], "mailrouter_route")
