"""A status page fetch's ``timeout`` is a deadline over the whole exchange,
against a real server that trickles one byte every 0.5 s (in the headers or
the body); the webhook never waits for a fetch (it schedules one)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from django.test import Client, override_settings

from mailrouter.backend import RouterBackend
from mailrouter.health.store import store_for
from mailrouter.status_pages import refresh
from mailrouter.status_pages.fetch import FetchError, fetch

from .commands import run
from .health_fixtures import FakeClock
from .status_fixtures import MAILERS, TOKEN
from .status_server import SUMMARY, StatusPageServer, TricklingServer, statuspage


@pytest.mark.parametrize("phase", ["headers", "body", "tls"])
def test_a_trickling_host_cannot_outlive_the_timeout(phase: str) -> None:
    with TricklingServer(phase) as server:
        url = server.url().replace("http:", "https:") if phase == "tls" else server.url()
        started = time.monotonic()
        with pytest.raises(FetchError, match="timed out"):
            fetch(url, timeout=1, allow_http=True)
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 1.6, elapsed


@pytest.fixture
def trickling() -> Iterator[TricklingServer]:
    with TricklingServer("body") as server:
        yield server


@pytest.fixture
def router(configure: Callable[..., RouterBackend], trickling: TricklingServer,
           clock: FakeClock) -> Iterator[RouterBackend]:
    refresh.refresher.forget()
    with override_settings(ROOT_URLCONF="tests.status_urls"):
        yield configure(MAILERS, {
            "routes": [{"mailers": ["a", "b"]}],
            "health": {"clock": "tests.health_fixtures.CLOCK"},
            "status_pages": {"a": {"url": trickling.url(), "allow_http": True, "timeout": 1}},
            "status_webhook_token": TOKEN,
        })
    refresh.refresher.wait_idle(10)


def test_refresh_status_ends_at_the_deadline(router: RouterBackend) -> None:
    started = time.monotonic()
    code, out = run("refresh-status", "--json")
    assert time.monotonic() - started < 1.8
    assert code == 1 and "timed out" in json.loads(out.split("\nCommandError")[0])[
        "refreshed"][0]["error"]


def test_the_background_refresher_is_free_again_after_the_deadline(
    router: RouterBackend, trickling: TricklingServer,
) -> None:
    page = router.config.status_pages["a"]
    settings = router.config.health_settings
    refresh.refresher.request(page, store_for(settings), settings.clock, force=True)
    started = time.monotonic()
    assert refresh.refresher.wait_idle(5)
    assert time.monotonic() - started < 1.6


def test_the_webhook_answers_at_once_and_fetches_in_the_background(
    router: RouterBackend, trickling: TricklingServer,
) -> None:
    started = time.monotonic()
    response = Client().post(f"/mailrouter/status/a/{TOKEN}/", b"{}",
                             content_type="application/json")
    assert response.status_code == 202 and response.json() == {"scheduled": True}
    assert time.monotonic() - started < 0.5  # the trickling fetch runs elsewhere
    assert refresh.refresher.wait_idle(5)
    assert trickling.connections == 1


def test_the_webhook_does_not_wait_for_a_hanging_host(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    held = threading.Event()
    with StatusPageServer() as server, override_settings(ROOT_URLCONF="tests.status_urls"):
        server.pages[SUMMARY] = statuspage({"API": "major_outage"})
        server.pages[SUMMARY].hold = held
        configure(MAILERS, {
            "routes": [{"mailers": ["a", "b"]}],
            "health": {"clock": "tests.health_fixtures.CLOCK"},
            "status_pages": {"a": {"url": server.url(SUMMARY), "allow_http": True,
                                   "components": ["API"], "timeout": 20}},
            "status_webhook_token": TOKEN,
        })
        response = Client().post(f"/mailrouter/status/a/{TOKEN}/", b"{}",
                                 content_type="application/json")
        assert response.status_code == 202 and not held.is_set()
        held.set()
        assert refresh.refresher.wait_idle(10)
        assert server.hits[SUMMARY] == 1
