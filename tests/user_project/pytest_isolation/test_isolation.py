"""pytest-django with @keep_routing (no parentheses), health cache in Redis."""

from shop import isolation

from mailrouter.testing import keep_routing


@keep_routing
class TestRoutingStateIsPerTest:
    def test_1_the_breaker_opens_on_primary(self) -> None:
        isolation.the_breaker_opens_on_primary()

    def test_2_primary_takes_mail(self) -> None:
        isolation.primary_takes_mail()


@keep_routing
def test_3_an_operators_drain_is_not_seen() -> None:
    isolation.an_operators_drain_is_not_seen()


@keep_routing
def test_4_shared_state_sees_the_operators_drain() -> None:
    isolation.shared_state_sees_the_operators_drain()
