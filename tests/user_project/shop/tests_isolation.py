"""Under RoutingTestRunner, with the health cache in Redis: each test starts
from empty routing state whatever ran before (run forwards and --reverse)."""

from django.test import SimpleTestCase

from . import isolation


class RoutingStateIsPerTest(SimpleTestCase):
    def test_1_the_breaker_opens_on_primary(self) -> None:
        isolation.the_breaker_opens_on_primary()

    def test_2_primary_takes_mail(self) -> None:
        isolation.primary_takes_mail()

    def test_3_an_operators_drain_is_not_seen(self) -> None:
        isolation.an_operators_drain_is_not_seen()

    def test_4_shared_state_sees_the_operators_drain(self) -> None:
        isolation.shared_state_sees_the_operators_drain()
