"""Run with Django's own runner: keep_routing as class decorator (written
without parentheses), function decorator and context manager; without it,
Django's test mail setup bypasses routing."""

from django.core import mail
from django.core.mail import send_mail
from django.test import SimpleTestCase

from mailrouter.testing import keep_routing

from . import expectations


@keep_routing
class DecoratedClass(SimpleTestCase):
    def test_eu_mail_goes_through_the_eu_relay(self) -> None:
        expectations.eu_mail_goes_through_the_eu_relay()

    def test_a_failing_mailer_fails_over(self) -> None:
        expectations.a_failing_mailer_fails_over()

    def test_the_breaker_opens_and_skips_the_dead_mailer(self) -> None:
        expectations.the_breaker_opens_and_skips_the_dead_mailer()


class Undecorated(SimpleTestCase):
    @keep_routing()
    def test_function_decorator(self) -> None:
        expectations.a_rejected_message_is_not_failed_over()

    def test_context_manager(self) -> None:
        with keep_routing():
            expectations.eu_mail_goes_through_the_eu_relay()

    def test_without_keep_routing_django_bypasses_the_router(self) -> None:
        send_mail("Rechnung", "...", None, ["kunde@example.de"])
        assert not hasattr(mail.outbox[0], "mailrouter_route")
