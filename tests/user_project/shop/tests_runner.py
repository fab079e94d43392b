"""Run with TEST_RUNNER = "mailrouter.testing.RoutingTestRunner": no decorator needed."""

from django.test import SimpleTestCase

from . import expectations


class RoutingUnderTheRunner(SimpleTestCase):
    def test_eu_mail_goes_through_the_eu_relay(self) -> None:
        expectations.eu_mail_goes_through_the_eu_relay()

    def test_a_failing_mailer_fails_over(self) -> None:
        expectations.a_failing_mailer_fails_over()

    def test_a_rejected_message_is_not_failed_over(self) -> None:
        expectations.a_rejected_message_is_not_failed_over()

    def test_the_breaker_opens_and_skips_the_dead_mailer(self) -> None:
        expectations.the_breaker_opens_and_skips_the_dead_mailer()
