"""The status webhook's token never reaches a log line or an answer: the path
form is masked in Django's own request/server loggers by a filter the app
installs itself (a real runserver-style WSGI server logs here), the token can
come as HTTP basic auth instead (no secret in the path), and both forms work
without their trailing slash (APPEND_SLASH neither redirects nor errors)."""

from __future__ import annotations

import base64
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.test import Client, override_settings

from mailrouter.backend import RouterBackend
from mailrouter.status_pages import refresh

from .health_fixtures import FakeClock
from .status_fixtures import MAILERS, TOKEN
from .status_server import SUMMARY, StatusPageServer, operational_api_page

COMMON = ["django.middleware.common.CommonMiddleware"]


server = pytest.fixture(operational_api_page, name="server")


@pytest.fixture
def router(configure: Callable[..., RouterBackend], server: StatusPageServer,
           clock: FakeClock) -> Iterator[RouterBackend]:
    refresh.refresher.forget()
    with override_settings(ROOT_URLCONF="tests.status_urls", MIDDLEWARE=COMMON,
                           APPEND_SLASH=True, ALLOWED_HOSTS=["127.0.0.1", "testserver"]):
        yield configure(MAILERS, {
            "routes": [{"mailers": ["a", "b"]}],
            "health": {"clock": "tests.health_fixtures.CLOCK"},
            "status_pages": {"a": {"url": server.url(SUMMARY), "components": ["API"],
                                   "allow_http": True}},
            "status_webhook_token": TOKEN,
        })
    refresh.refresher.wait_idle(10)


def basic(password: str, user: str = "mailrouter") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("url", [f"/mailrouter/status/a/{TOKEN}/",
                                 f"/mailrouter/status/a/{TOKEN}"])
def test_the_token_form_works_with_and_without_the_trailing_slash(
    router: RouterBackend, server: StatusPageServer, url: str, debug: bool,
) -> None:
    with override_settings(DEBUG=debug):
        response = Client(raise_request_exception=False).post(
            url, b"{}", content_type="application/json")
    assert response.status_code == 202, response.content[:300]
    assert TOKEN.encode() not in response.content
    assert refresh.refresher.wait_idle(10) and server.hits[SUMMARY] == 1


@pytest.mark.parametrize("url", ["/mailrouter/status/a/", "/mailrouter/status/a"])
def test_basic_auth_keeps_the_token_out_of_the_path(
    router: RouterBackend, server: StatusPageServer, url: str,
) -> None:
    client = Client()
    response = client.post(url, b"{}", content_type="application/json",
                           HTTP_AUTHORIZATION=basic(TOKEN))
    assert response.status_code == 202 and response.json() == {"scheduled": True}
    for headers in ({}, {"HTTP_AUTHORIZATION": basic("wrong-token-wrong-token")},
                    {"HTTP_AUTHORIZATION": "Bearer " + TOKEN},
                    {"HTTP_AUTHORIZATION": "Basic !!not-base64!!"}):
        refused = client.post(url, b"{}", content_type="application/json", **headers)
        assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Basic")
    # An unknown alias answers as wrong credentials do: aliases cannot be probed.
    unknown = client.post("/mailrouter/status/nope/", b"{}", content_type="application/json",
                          HTTP_AUTHORIZATION=basic(TOKEN))
    assert unknown.status_code == 401
    assert client.get(url, HTTP_AUTHORIZATION=basic(TOKEN)).status_code == 405
    assert refresh.refresher.wait_idle(10) and server.hits[SUMMARY] == 1


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logged() -> Iterator[Records]:
    records = Records()
    loggers = [logging.getLogger(name) for name in ("django.server", "django.request")]
    for logger in loggers:
        logger.addHandler(records)
        logger.setLevel(logging.INFO)
    yield records
    for logger in loggers:
        logger.removeHandler(records)
        logger.setLevel(logging.NOTSET)


def test_runserver_and_request_logs_never_show_the_token(
    router: RouterBackend, logged: Records,
) -> None:
    # Django's own development server (what runserver runs), on a free port.
    httpd = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    httpd.set_app(WSGIHandler())
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/mailrouter/status/a/{TOKEN}"
    answers = []
    try:
        for url, body in ((base + "/", b"{}"), (base, b"{}"), (base + "/", b"not json"),
                          (base + "/extra/", b"{}")):
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    answers.append(response.status)
            except urllib.error.HTTPError as error:
                answers.append(error.code)
                assert TOKEN.encode() not in error.read()
    finally:
        httpd.shutdown()
        httpd.server_close()
    # A handler error elsewhere that quotes the path goes through the filter too.
    logging.getLogger("django.request").warning("Not Found: %s", f"/status/a/{TOKEN}/x")
    assert answers == [202, 202, 400, 404]
    assert len(logged.lines) >= 5
    assert "/mailrouter/status/a/***" in "\n".join(logged.lines)
    assert all(TOKEN not in line for line in logged.lines), logged.lines
