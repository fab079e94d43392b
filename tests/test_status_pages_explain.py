"""``explain`` (the command and ``RouterBackend.explain()``) with status
pages that have no reading yet: the embedded per-process store before the
first refresh. The page is then unknown, which is never down."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from django.core.mail import EmailMessage

from mailrouter.backend import RouterBackend
from mailrouter.status_pages import refresh

from .commands import run
from .health_fixtures import FakeClock
from .status_server import SERVICES, SUMMARY, StatusPageServer, postmark, statuspage

MAILERS = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
           for alias in ("a", "b")}


@pytest.fixture
def router(configure: Callable[..., RouterBackend], clock: FakeClock) -> Iterator[RouterBackend]:
    with StatusPageServer() as server:
        server.pages[SUMMARY] = statuspage({"API": "major_outage"})
        server.pages[SERVICES] = postmark({"API": "DEGRADED"})
        # No "cache": the embedded per-process store, empty until a refresh.
        yield configure(MAILERS, {
            "routes": [{"mailers": ["a", "b"]}],
            "health": {"clock": "tests.health_fixtures.CLOCK"},
            "status_pages": {
                "a": {"url": server.url(SUMMARY), "components": ["API"], "allow_http": True},
                "b": {"url": server.url(SERVICES), "kind": "postmark", "allow_http": True},
            },
        })
        refresh.refresher.wait_idle(10)


def test_explain_command_before_any_reading(router: RouterBackend) -> None:
    code, out = run("explain", "--to", "u@example.com", "--json")
    assert code == 0, out
    candidates = json.loads(out)["candidates"]
    assert [(c["alias"], c["skip"], c["note"]) for c in candidates] == [
        ("a", None, None), ("b", None, None)]
    code, text = run("explain", "--to", "u@example.com")
    assert code == 0 and "1. a  [closed]  try" in text and "2. b  [closed]  try" in text


def test_router_explain_before_the_first_refresh(router: RouterBackend) -> None:
    explained = router.explain(EmailMessage("s", "b", "app@example.com", ["u@example.com"]))
    assert [(c.alias, c.skip) for c in explained.candidates] == [("a", None), ("b", None)]
