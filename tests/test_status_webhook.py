"""The status page webhook through Django's test client, against a real
local status server: a valid POST is a hint that causes one fetch; nothing
in a payload changes routing; no input gives a 500."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter.backend import RouterBackend
from mailrouter.health.store import key, store_for
from mailrouter.status_pages import refresh
from mailrouter.status_pages.record import hint_part

from .conftest import examples
from .health_fixtures import FakeClock
from .status_server import SERVICES, SUMMARY, StatusPageServer, postmark, statuspage
from .test_status_pages import MAILERS, TOKEN, page_options

URL = f"/mailrouter/status/a/{TOKEN}/"
INCIDENT = {"meta": {"unsubscribe": "...", "generated_at": "2026-12-01T10:00:00Z"},
            "page": {"id": "p1", "status_indicator": "major"},
            "component_update": {"new_status": "major_outage", "old_status": "operational"}}


@pytest.fixture
def server() -> Iterator[StatusPageServer]:
    with StatusPageServer() as running:
        running.pages[SUMMARY] = statuspage({"API": "operational", "Outbound": "operational"})
        running.pages[SERVICES] = postmark({"API": "UP"})
        yield running


@pytest.fixture
def router(configure: Callable[..., RouterBackend], server: StatusPageServer,
           clock: FakeClock) -> Iterator[RouterBackend]:
    with override_settings(ROOT_URLCONF="tests.status_urls"):
        yield configure(MAILERS, page_options(server))


def post(body: Any, url: str = URL, **extra: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Client().post(url, data, content_type="application/json", **extra)


def first_alias(router: RouterBackend) -> str:
    message = EmailMessage("s", "b", "app@example.com", ["u@example.com"])
    router.send_messages([message])
    return str(message.mailrouter_attempts[0].outcome.value)  # type: ignore[attr-defined]


def end_hint_interval(router: RouterBackend, alias: str = "a") -> None:
    # The hint lease's TTL runs on the cache's own (real) time: end it as time would.
    page = router.config.status_pages[alias]
    store_for(router.config.health_settings).backend().delete(key(alias, hint_part(page)))


def test_a_valid_hint_fetches_the_page_and_only_the_page_decides(
    router: RouterBackend, server: StatusPageServer,
) -> None:
    response = post(INCIDENT)  # claims an outage; the page says operational
    assert response.status_code == 202 and response.json() == {"scheduled": True}
    assert refresh.refresher.wait_idle(10)
    assert server.hits[SUMMARY] == 1
    assert first_alias(router) == "accepted"
    server.pages[SUMMARY] = statuspage({"API": "major_outage", "Outbound": "operational"})
    end_hint_interval(router)
    assert post(INCIDENT).json() == {"scheduled": True}
    assert refresh.refresher.wait_idle(10)
    assert first_alias(router) == "skipped"


def test_replayed_hints_are_rate_limited(router: RouterBackend, server: StatusPageServer) -> None:
    assert post(INCIDENT).json() == {"scheduled": True}
    for _ in range(5):
        response = post(INCIDENT)
        assert response.status_code == 202 and response.json() == {"scheduled": False}
    assert refresh.refresher.wait_idle(10)
    assert server.hits[SUMMARY] == 1


@pytest.mark.parametrize("url", [
    "/mailrouter/status/a/wrong-token-wrong-token-wrong/",
    f"/mailrouter/status/a/{TOKEN[:-1]}/",
    f"/mailrouter/status/c/{TOKEN}/",  # c has no status page
    f"/mailrouter/status/nope/{TOKEN}/",
])
def test_forged_tokens_and_unknown_aliases_are_404(router: RouterBackend,
                                                   server: StatusPageServer, url: str) -> None:
    assert post(INCIDENT, url).status_code == 404
    assert Client().get(url).status_code == 404
    assert server.hits[SUMMARY] == 0


def test_wrong_method_malformed_and_oversized(router: RouterBackend, server: StatusPageServer,
                                              caplog: pytest.LogCaptureFixture) -> None:
    client = Client()
    assert client.get(URL).status_code == 405
    assert client.put(URL, b"{}").status_code == 405
    assert post(b"{not json").status_code == 400
    assert post(b"\xff\xfe").status_code == 400
    assert post([1, 2, 3]).status_code == 400
    assert post(b"[" * 100000).status_code == 413
    assert post({"x": "y" * 70000}).status_code == 413
    assert server.hits[SUMMARY] == 0
    # Django logs 4xx answers with their path; the token must not reach the logs.
    assert TOKEN not in caplog.text


@given(body=st.one_of(st.binary(max_size=2000),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                                   lambda inner: st.lists(inner) | st.dictionaries(st.text(),
                                                                                   inner),
                                   max_leaves=20).map(lambda v: json.dumps(v).encode())),
       method=st.sampled_from(["post", "get", "put", "delete", "patch"]))
@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_body_or_method_gives_a_500_or_changes_routing(
    router: RouterBackend, server: StatusPageServer, body: bytes, method: str,
) -> None:
    client = Client(raise_request_exception=False)
    if method == "get":  # a GET's data is its query string
        response = client.get(URL, {"q": body.decode("latin-1")})
    else:
        response = getattr(client, method)(URL, body, content_type="application/json")
    assert response.status_code in (202, 400, 405, 413)
    assert first_alias(router) == "accepted"  # the page says operational, whatever was posted
