"""``manage.py mailrouter status|explain|refresh-status`` with status pages,
against a real local status server; state in the suite's real Redis."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage

from mailrouter.backend import RouterBackend
from mailrouter.testing.redis import RedisServer

from .commands import run
from .health_fixtures import FakeClock, redis_caches
from .status_server import SERVICES, SUMMARY, Page, StatusPageServer, postmark, statuspage

PAGE_TOKEN = "pagetoken-abcdef123456"
MAILERS = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
           for alias in ("a", "b", "c")}


@pytest.fixture
def server() -> Iterator[StatusPageServer]:
    with StatusPageServer() as running:
        running.pages[SUMMARY] = statuspage({"API": "operational"})
        running.pages[SERVICES] = postmark({"API": "UP"})
        yield running


@pytest.fixture
def router(configure: Callable[..., RouterBackend], server: StatusPageServer,
           redis: RedisServer, clock: FakeClock) -> RouterBackend:
    return configure(MAILERS, {
        "routes": [{"mailers": ["a", "b", "c"]}],
        "health": {"cache": "health", "clock": "tests.health_fixtures.CLOCK"},
        "status_pages": {
            # A token in the page URL's query is a secret: it is never printed.
            "a": {"url": server.url(f"{SUMMARY}?api_key={PAGE_TOKEN}"),
                  "components": ["API"], "allow_http": True},
            "b": {"url": server.url(SERVICES), "kind": "postmark", "allow_http": True},
        },
    }, CACHES=redis_caches(redis))


def test_refresh_status_then_status_and_explain(router: RouterBackend,
                                                server: StatusPageServer) -> None:
    server.pages[f"{SUMMARY}?api_key={PAGE_TOKEN}"] = statuspage({"API": "major_outage"})
    server.pages[SERVICES] = postmark({"API": "DEGRADED"})
    code, out = run("refresh-status")
    assert code == 0, out
    assert "a: down (API: major_outage)" in out and "b: degraded (API: DEGRADED)" in out

    code, out = run("status", "--json")
    pages = {row["alias"]: row["status_page"] for row in json.loads(out)["mailers"]}
    assert pages["c"] is None
    assert pages["a"]["state"] == "down" and pages["a"]["worst"] == "API: major_outage"
    assert pages["a"]["effect"].startswith("skipped")
    assert pages["b"]["state"] == "degraded" and pages["a"]["fetched_at"] is not None
    code, text = run("status")
    assert "STATUS PAGE" in text and "API: major_outage" in text
    assert PAGE_TOKEN not in out + text

    code, out = run("explain", "--to", "u@example.com", "--json")
    candidates = json.loads(out)["candidates"]
    assert [c["alias"] for c in candidates] == ["a", "c", "b"]  # b degraded: last
    assert "status page 127.0.0.1 says API: major_outage" in candidates[0]["skip"]
    assert "tried after the healthy candidates" in candidates[2]["note"]
    # RouterBackend.explain() says the same, for code (a health endpoint, say).
    explained = router.explain(EmailMessage("s", "b", "app@example.com", ["u@example.com"]))
    assert [(c.alias, c.skip is not None) for c in explained.candidates] == [
        ("a", True), ("c", False), ("b", False)]
    assert explained.candidates[0].skip == candidates[0]["skip"]


def test_refresh_status_reports_unreadable_pages(router: RouterBackend,
                                                 server: StatusPageServer) -> None:
    server.pages[SERVICES] = Page(b"<html>maintenance</html>", content_type="text/html")
    code, out = run("refresh-status", "b")
    assert code == 1 and "b: unknown (HTML body" in out
    assert server.hits[f"{SUMMARY}?api_key={PAGE_TOKEN}"] == 0  # only the page asked for
    code, out = run("status", "--json")
    rows = {row["alias"]: row["status_page"] for row in json.loads(out)["mailers"]}
    page = rows["b"]
    assert page["state"] == "unknown" and "HTML body" in page["last_error"]
    assert page["effect"] == "no effect (unknown is never down)"
    assert rows["a"]["last_error"] == "not fetched yet"


@pytest.mark.parametrize("args, message", [
    (("refresh-status", "nope"), "unknown mailer alias 'nope'"),
    (("refresh-status", "c"), "no status page is configured for c"),
])
def test_refresh_status_usage_errors(router: RouterBackend, args: Any, message: str) -> None:
    code, out = run(*args)
    assert code == 2 and message in out
