"""A status page reading written by a host whose clock is ahead: dated in
the future, it is stale at once (no effect on routing) and refetched, so how
long a reading counts never depends on another host's clock alone."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from mailrouter.backend import RouterBackend
from mailrouter.health.store import store_for
from mailrouter.status_pages import refresh
from mailrouter.status_pages.record import PageRecord, PageState

from .commands import run
from .health_fixtures import FakeClock, redis_caches
from .status_fixtures import MAILERS, send, tried
from .status_server import SUMMARY, StatusPageServer, operational_api_page

HOURS_AHEAD = 2 * 3600


server = pytest.fixture(operational_api_page, name="server")


@pytest.fixture
def router(configure: Callable[..., RouterBackend], server: StatusPageServer,
           clock: FakeClock, redis: object) -> RouterBackend:
    refresh.refresher.forget()
    return configure(MAILERS, {
        "routes": [{"mailers": ["a", "b"]}],
        "health": {"cache": "health", "clock": "tests.health_fixtures.CLOCK"},
        "status_pages": {"a": {"url": server.url(SUMMARY), "components": ["API"],
                               "allow_http": True, "refresh": 60}},
    }, CACHES=redis_caches(redis))  # type: ignore[arg-type]


def plant_future_down(router: RouterBackend, seconds_ahead: float) -> None:
    """What a host whose clock is ``seconds_ahead`` stores after reading 'down'."""
    page = router.config.status_pages["a"]
    ahead = router.config.health_settings.clock() + seconds_ahead
    record = PageRecord(PageState.DOWN, ahead, "API: major_outage", ahead, None, None, page.url)
    store_for(router.config.health_settings).set_value("a", page.record_part,
                                                       record.to_dict(), 86400)


def test_a_reading_from_the_future_is_not_acted_on_and_is_refetched(
    router: RouterBackend, server: StatusPageServer, clock: FakeClock,
) -> None:
    plant_future_down(router, HOURS_AHEAD)
    assert tried(send(router)) == [("a", "accepted")]  # not skipped for the skew's 2 h
    assert refresh.refresher.wait_idle(10)
    assert server.hits[SUMMARY] == 1  # this host refetched it at once
    page = router.config.status_pages["a"]
    stored = store_for(router.config.health_settings).get_value("a", page.record_part)
    assert stored["state"] == "operational" and stored["checked_at"] == clock()


def test_status_says_why_a_future_reading_is_ignored(
    router: RouterBackend, server: StatusPageServer,
) -> None:
    plant_future_down(router, HOURS_AHEAD)
    _, out = run("status", "--json")
    page = next(r for r in json.loads(out)["mailers"] if r["alias"] == "a")["status_page"]
    assert page["state"] == "unknown" and "dated in the future" in page["last_error"]


def test_ordinary_skew_between_hosts_still_counts(
    router: RouterBackend, server: StatusPageServer,
) -> None:
    plant_future_down(router, 0.5)  # NTP-level skew: the reading is fresh
    assert tried(send(router))[0] == ("a", "skipped")
    assert refresh.refresher.wait_idle(10)
    assert server.hits[SUMMARY] == 0
