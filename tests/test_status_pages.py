"""ESP status pages as a health source, against a real local HTTP server.

Mailers are the scripted in-process backends of tests/fakes.py; status
documents come from tests/status_server.py and change during the tests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.core.mail import EmailMessage

from mailrouter import signals
from mailrouter.backend import RouterBackend
from mailrouter.errors import ConfigurationError
from mailrouter.health.store import key, store_for
from mailrouter.status_pages import refresh
from mailrouter.status_pages.fetch import FetchError, fetch
from mailrouter.status_pages.record import PageState, lease_part
from mailrouter.status_pages.refresh import refresh_now

from . import fakes
from .health_fixtures import COUNTING_CACHES, CountingCache, FakeClock
from .status_fixtures import MAILERS, TOKEN, send, tried
from .status_server import SERVICES, SUMMARY, Page, StatusPageServer, postmark, statuspage

HEALTH = {"failure_threshold": 3, "failure_rate": None, "cooldown": 10,
          "clock": "tests.health_fixtures.CLOCK"}


@pytest.fixture
def server() -> Iterator[StatusPageServer]:
    with StatusPageServer() as running:
        running.pages[SUMMARY] = statuspage({"API": "operational", "Outbound": "operational"})
        running.pages[SERVICES] = postmark({"API": "UP", "SMTP": "UP"})
        yield running


def page_options(server: StatusPageServer, **extra: Any) -> dict[str, Any]:
    return {
        "routes": [{"mailers": ["a", "b", "c"]}],
        "health": HEALTH,
        "status_pages": {
            "a": {"url": server.url(SUMMARY), "components": ["API", "Outbound"],
                  "allow_http": True, "timeout": 1, "refresh": 60},
            "b": {"url": server.url(SERVICES), "kind": "postmark", "components": ["api"],
                  "allow_http": True, "timeout": 1, "refresh": 60},
        },
        "status_webhook_token": TOKEN,
        **extra,
    }


@pytest.fixture
def router(configure: Callable[..., RouterBackend], server: StatusPageServer,
           clock: FakeClock) -> RouterBackend:
    refresh.refresher.forget()
    return configure(MAILERS, page_options(server))


def refresh_all(router: RouterBackend) -> dict[str, Any]:
    config = router.config
    return refresh_now(dict(config.status_pages), store_for(config.health_settings),
                       config.health_settings.clock)


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- sources -------------------------------------------------------------------------

def test_statuspage_components_groups_and_indicator(server: StatusPageServer) -> None:
    from mailrouter.status_pages.sources import Level, StatuspageSource, UnexpectedDocument

    source = StatuspageSource()
    document = json.loads(statuspage(
        {"API": "degraded_performance"}, indicator="minor",
        groups={"Outbound Delivery": {"EU": "major_outage", "US": "operational"}},
    ).body)
    assert source.read(document, ["api"]).level is Level.DEGRADED
    assert source.read(document, ["US"]).level is Level.OPERATIONAL
    reading = source.read(document, ["API", "Outbound Delivery - EU"])
    assert (reading.level, reading.worst) == (Level.DOWN, "Outbound Delivery - EU: major_outage")
    assert source.read(document, []).level is Level.DEGRADED  # indicator minor
    # The group header is an aggregate: never matched by its own name.
    with pytest.raises(UnexpectedDocument, match="not on the page"):
        source.read(document, ["Outbound Delivery"])
    for indicator, level in [("none", Level.OPERATIONAL), ("maintenance", Level.DEGRADED),
                             ("major", Level.DOWN), ("critical", Level.DOWN)]:
        assert source.read(json.loads(statuspage(indicator=indicator).body), []).level is level
    with pytest.raises(UnexpectedDocument):
        source.read(json.loads(statuspage({"API": "on_fire"}).body), ["API"])
    with pytest.raises(UnexpectedDocument):
        source.read([1, 2], ["API"])


def test_postmark_services() -> None:
    from mailrouter.status_pages.sorry import PostmarkSource
    from mailrouter.status_pages.sources import Level, UnexpectedDocument

    source = PostmarkSource()
    statuses = {"UP": Level.OPERATIONAL, "MAINTENANCE": Level.DEGRADED,
                "DELAY": Level.DEGRADED, "DEGRADED": Level.DEGRADED, "DOWN": Level.DOWN}
    for status, level in statuses.items():
        for wrapped in (False, True):
            document = json.loads(postmark({"API": "UP", "SMTP": status}, wrapped).body)
            assert source.read(document, ["api", "smtp"]).level is level
            assert source.read(document, []).level is level
    with pytest.raises(UnexpectedDocument):
        source.read(json.loads(postmark({"API": "UP"}).body), ["smtp"])
    with pytest.raises(UnexpectedDocument):
        source.read({"services": "no"}, [])


# -- fetching --------------------------------------------------------------------------

@pytest.mark.parametrize("page, error", [
    (Page(b"<!doctype html><html>status</html>", content_type="text/html"), "HTML body"),
    (Page(b"{not json"), "not JSON"),
    (Page(b'{"error": "x"}', status=500), "HTTP 500"),
    (Page(b"[" + b" " * (2 * 1024 * 1024) + b"]"), "body over"),
    (Page(b"", status=302, location="http://localhost:{port}/elsewhere"), "another host"),
    (Page(b"{}", delay=2.0), "timed out"),
])
def test_fetch_failures_are_fetch_errors(server: StatusPageServer, page: Page, error: str) -> None:
    if page.location is not None:
        page.location = page.location.format(port=server.port)
    server.pages["/p"] = page
    with pytest.raises(FetchError, match=error):
        fetch(server.url("/p"), timeout=0.5, allow_http=True)


def test_fetch_follows_same_host_redirects_and_honours_etags(server: StatusPageServer) -> None:
    server.pages["/old"] = Page(b"", status=301, location=SUMMARY)
    first = fetch(server.url("/old"), timeout=1, allow_http=True)
    assert isinstance(first.document, dict) and first.etag
    again = fetch(server.url(SUMMARY), timeout=1, allow_http=True, etag=first.etag)
    assert again.not_modified and server.not_modified[SUMMARY] == 1
    # A redirect from http(s) to plain http is refused unless allowed.
    with pytest.raises(FetchError, match="plain http"):
        fetch(server.url("/old"), timeout=1, allow_http=False)


# -- routing follows the page ---------------------------------------------------------------

def test_routing_follows_the_page_and_fails_back(router: RouterBackend,
                                                 server: StatusPageServer) -> None:
    refresh_all(router)
    assert tried(send(router)) == [("a", "accepted")]
    server.pages[SUMMARY] = statuspage({"API": "operational", "Outbound": "major_outage"})
    refresh_all(router)
    message = send(router)
    assert tried(message) == [("a", "skipped"), ("b", "accepted")]
    skip = message.mailrouter_attempts[0].error  # type: ignore[attr-defined]
    assert "status page 127.0.0.1 says Outbound: major_outage" in skip
    server.pages[SUMMARY] = statuspage({"API": "operational", "Outbound": "operational"})
    refresh_all(router)
    assert tried(send(router)) == [("a", "accepted")]
    # The skips were not blamed on a's breaker.
    assert store_for(router.config.health_settings).load_breaker("a").openings == 0
    assert fakes.TRIED["a"] == 2


@pytest.mark.parametrize("status", ["degraded_performance", "partial_outage",
                                    "under_maintenance"])
def test_a_degraded_mailer_is_tried_after_the_healthy_ones(
    router: RouterBackend, server: StatusPageServer, status: str,
) -> None:
    server.pages[SUMMARY] = statuspage({"API": status, "Outbound": "operational"})
    refresh_all(router)
    assert tried(send(router)) == [("b", "accepted")]
    fakes.SCRIPTS["b"].append("tempfail")
    fakes.SCRIPTS["c"].append("tempfail")
    assert tried(send(router)) == [("b", "not_sent"), ("c", "not_sent"), ("a", "accepted")]


def test_postmark_down_skips_and_every_candidate_out_still_tries(
    router: RouterBackend, server: StatusPageServer, configure: Callable[..., RouterBackend],
) -> None:
    server.pages[SERVICES] = postmark({"API": "DOWN", "SMTP": "UP"})
    server.pages[SUMMARY] = statuspage({"API": "major_outage", "Outbound": "operational"})
    refresh_all(router)
    assert tried(send(router)) == [("a", "skipped"), ("b", "skipped"), ("c", "accepted")]
    only_paged = configure(MAILERS, page_options(server, routes=[{"mailers": ["a", "b"]}]))
    message = send(only_paged)
    # Every candidate out: tried in order anyway, never failed untried.
    assert tried(message)[-2:] == [("a", "accepted")] or ("a", "accepted") in tried(message)
    assert message.sent_using == "a"  # type: ignore[attr-defined]


@pytest.mark.parametrize("broken", [
    Page(b"<html>We are down</html>", content_type="text/html"),
    Page(b"oops", status=500),
    Page(b'{"components": "?"}'),
    Page(b"[" + b" " * (2 * 1024 * 1024) + b"]"),
    Page(b"", status=302, location="http://localhost:{port}/x"),
])
def test_unknown_never_takes_a_mailer_out(router: RouterBackend, server: StatusPageServer,
                                          broken: Page, caplog: pytest.LogCaptureFixture) -> None:
    server.pages[SUMMARY] = statuspage({"API": "major_outage", "Outbound": "operational"})
    refresh_all(router)
    assert tried(send(router))[0] == ("a", "skipped")
    if broken.location is not None:
        broken.location = broken.location.format(port=server.port)
    server.pages[SUMMARY] = broken
    with caplog.at_level(logging.WARNING, logger="mailrouter"):
        records = refresh_all(router)
        refresh_all(router)
    assert records["a"].state is PageState.UNKNOWN and records["a"].error
    assert tried(send(router)) == [("a", "accepted")]
    # Logged once per state change, not once per refresh.
    changes = [r for r in caplog.records if "status page down → unknown" in r.getMessage()]
    assert len(changes) == 1


def test_a_missing_component_is_unknown(router: RouterBackend, server: StatusPageServer) -> None:
    server.pages[SUMMARY] = statuspage({"API": "major_outage"})  # no "Outbound"
    records = refresh_all(router)
    assert records["a"].state is PageState.UNKNOWN
    assert "'Outbound' is not on the page" in str(records["a"].error)
    assert tried(send(router)) == [("a", "accepted")]


def test_etag_304_keeps_the_reading(router: RouterBackend, server: StatusPageServer,
                                    clock: FakeClock) -> None:
    server.pages[SUMMARY] = statuspage({"API": "major_outage", "Outbound": "operational"})
    refresh_all(router)
    clock.advance(120)
    records = refresh_all(router)
    assert server.not_modified[SUMMARY] == 1
    assert records["a"].state is PageState.DOWN and records["a"].checked_at == clock.now
    assert tried(send(router))[0] == ("a", "skipped")


def test_a_reading_too_old_is_unknown(router: RouterBackend, server: StatusPageServer,
                                      clock: FakeClock) -> None:
    server.pages[SUMMARY] = statuspage({"API": "major_outage", "Outbound": "operational"})
    refresh_all(router)
    server.pages[SUMMARY].hold = threading.Event()  # the refresher cannot get a new one
    clock.advance(3 * 60 + 1 + 1)
    assert tried(send(router)) == [("a", "accepted")]
    server.pages[SUMMARY].hold.set()  # type: ignore[union-attr]
    refresh.refresher.wait_idle(10)


# -- never on the hot path --------------------------------------------------------------------

def test_sending_never_waits_for_a_hanging_page(router: RouterBackend,
                                                server: StatusPageServer) -> None:
    held = threading.Event()
    server.pages[SUMMARY] = statuspage({"API": "major_outage", "Outbound": "operational"})
    server.pages[SUMMARY].hold = held
    server.pages[SERVICES].hold = held
    for _ in range(3):
        # Nothing stored yet: the batch queues background refreshes and sends.
        assert tried(send(router)) == [("a", "accepted")]
    assert not held.is_set()  # every send above finished while the page hung
    wait_for(lambda: server.hits[SUMMARY] == 1)  # one background fetch, not one per send
    held.set()
    assert refresh.refresher.wait_idle(10)
    assert tried(send(router)) == [("a", "skipped"), ("b", "accepted")]


def test_stale_pages_are_refreshed_in_the_background_once_per_interval(
    router: RouterBackend, server: StatusPageServer, clock: FakeClock,
) -> None:
    for _ in range(5):
        send(router)
        assert refresh.refresher.wait_idle(10)
    assert (server.hits[SUMMARY], server.hits[SERVICES]) == (1, 1)
    clock.advance(61)
    refresh.refresher.forget()
    # The lease's TTL runs on the cache's own (real) time: end it as time would.
    page = router.config.status_pages["a"]
    store_for(router.config.health_settings).backend().delete(key("a", lease_part(page)))
    server.pages[SUMMARY] = statuspage({"API": "major_outage", "Outbound": "operational"})
    send(router)
    assert refresh.refresher.wait_idle(10)
    assert server.hits[SUMMARY] == 2
    assert tried(send(router))[0] == ("a", "skipped")


def test_healthy_path_is_one_get_many_and_no_writes(
    configure: Callable[..., RouterBackend], server: StatusPageServer, clock: FakeClock,
) -> None:
    options = page_options(server)
    options["health"] = {**HEALTH, "cache": "health"}
    router = configure(MAILERS, options, CACHES=COUNTING_CACHES)
    caches["health"].clear()  # a local-memory cache outlives tests: no breakers from others
    refresh_all(router)
    CountingCache.CALLS.clear()
    for _ in range(10):
        assert tried(send(router)) == [("a", "accepted")]
    assert dict(CountingCache.CALLS) == {"get_many": 10}


# -- signals ------------------------------------------------------------------------------------

def test_status_changes_are_signalled_once(router: RouterBackend,
                                           server: StatusPageServer) -> None:
    seen: list[tuple[str, str, str, str]] = []

    def receiver(sender: Any, alias: str, old: Any, new: Any, reason: str, **_: Any) -> None:
        seen.append((alias, str(old), str(new), reason))

    signals.mailer_status_changed.connect(receiver)
    try:
        refresh_all(router)
        refresh_all(router)
        server.pages[SERVICES] = postmark({"API": "DELAY", "SMTP": "UP"})
        refresh_all(router)
        refresh_all(router)
    finally:
        signals.mailer_status_changed.disconnect(receiver)
    assert seen == [
        ("a", "unknown", "operational", "status page 127.0.0.1: API: operational"),
        ("b", "unknown", "operational", "status page 127.0.0.1: api: UP"),
        ("b", "operational", "degraded", "status page 127.0.0.1: api: DELAY"),
    ]


# -- configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("pages, token, problem", [
    ({"a": {"url": "http://status.example.com/x"}}, None, "'url'] is plain http"),
    ({"a": {"url": "https://s.example.com", "colour": 1}}, None, "unknown key 'colour'"),
    ({"nope": {"url": "https://s.example.com"}}, None, "'nope' is not a leaf mailer"),
    ({"a": {}}, None, "['url'] is required"),
    ({"a": {"url": "https://s.example.com", "kind": "nope"}}, None, "['kind'] 'nope'"),
    ({"a": {"url": "https://s.example.com", "refresh": 0}}, None, "['refresh'] must be"),
    ({"a": {"url": "https://s.example.com", "components": "API"}}, None, None),
    ({}, "short", "'status_webhook_token' must be"),
])
def test_bad_options_fail_at_construction(configure: Callable[..., RouterBackend], pages: Any,
                                          token: Any, problem: str | None) -> None:
    options = {"routes": [{"mailers": ["a"]}], "status_pages": pages,
               "status_webhook_token": token}
    if problem is None:
        router = configure(MAILERS, options)
        assert router.config.status_pages["a"].components == ("API",)
        return
    with pytest.raises(ConfigurationError) as raised:
        configure(MAILERS, options)
    text = str(raised.value)
    assert problem in text
    assert ("'status_pages'" in text) == (token is None)
    assert "short" not in text  # the token is a secret


def test_status_pages_need_health(configure: Callable[..., RouterBackend]) -> None:
    with pytest.raises(ConfigurationError, match="needs health tracking"):
        configure(MAILERS, {"routes": [{"mailers": ["a"]}], "health": False,
                            "status_pages": {"a": {"url": "https://s.example.com"}}})


def test_pages_apply_to_concurrent_batches(configure: Callable[..., RouterBackend],
                                          server: StatusPageServer, clock: FakeClock) -> None:
    # Worker threads share the batch's health view: skips and demotions hold there too.
    refresh.refresher.forget()
    router = configure(MAILERS, page_options(server, concurrency=4))
    server.pages[SUMMARY] = statuspage({"API": "major_outage", "Outbound": "operational"})
    server.pages[SERVICES] = postmark({"API": "DEGRADED", "SMTP": "UP"})
    refresh_all(router)
    messages = [EmailMessage("s", "b", "app@example.com", [f"u{i}@example.com"])
                for i in range(12)]
    assert router.send_messages(messages) == 12
    assert {tuple(tried(m)) for m in messages} == {(("a", "skipped"), ("c", "accepted"))}
    assert fakes.TRIED["a"] == fakes.TRIED["b"] == 0
