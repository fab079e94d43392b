"""Fixtures of every test module in this directory.

- ``configure`` / ``style``: configure the router in either settings style;
- ``smtp_server``: real local SMTP servers, stopped after the test;
- ``esp``: fake ESP HTTP servers (tests/esp_fixtures.py has their mailers), stopped after the test;
- ``clock``: the controllable clock ``CLOCK`` (tests/health_fixtures.py), reset to ``START``;
- a fresh per-process health state and call counters for every test (autouse);
- ``redis_server`` (session) / ``redis`` (per test, emptied and running);
- ``postgres`` / ``durable_postgres`` (per module): a throw-away PostgreSQL, with
  fast settings, or with the durable commits the outbox requires.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from django.core import mail
from hypothesis import settings as hypothesis_settings

from mailrouter.backend import RouterBackend
from mailrouter.health import store as health_store
from mailrouter.testing import FakeESPServer, FaultySMTPServer
from mailrouter.testing.redis import RedisServer
from mailrouter.testing.settings import STYLES, default_mailer, router_settings

from . import fakes
from .esp_fixtures import API_KEY
from .health_fixtures import CLOCK, START, CountingCache, FakeClock, redis_binary
from .postgres_fixtures import PostgresServer, running_postgres

# CI runs a fixed set of examples (a red CI must be reproducible); local runs
# explore new ones each time. MAILROUTER_EXAMPLES_SCALE=10 explores ten times more.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")
EXAMPLES_SCALE = float(os.environ.get("MAILROUTER_EXAMPLES_SCALE", "1"))


def examples(count: int) -> int:
    """A property test's number of examples, scaled by MAILROUTER_EXAMPLES_SCALE."""
    return max(1, round(count * EXAMPLES_SCALE))


# A user's project, run in subprocesses by test_user_project.py.
collect_ignore = ["user_project"]


def make_router() -> RouterBackend:
    """The router exactly as Django's own send path creates it."""
    backend = default_mailer()
    assert isinstance(backend, RouterBackend)
    return backend


@pytest.fixture(params=STYLES)
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def configure(style: str) -> Iterator[Callable[..., RouterBackend]]:
    """``configure(mailers, options) -> router`` in the parametrized style."""
    stack: list[Any] = []

    def apply(
        mailers: Mapping[str, Any], options: Mapping[str, Any], **extra: Any
    ) -> RouterBackend:
        context = router_settings(mailers, options, style=style, **extra)
        context.__enter__()
        stack.append(context)
        return make_router()

    yield apply
    while stack:
        stack.pop().__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _clean_outbox() -> Iterator[None]:
    """Each test starts with an empty outbox and unscripted fake mailers."""
    mail.outbox = []
    fakes.reset()
    yield
    mail.outbox = []
    fakes.reset()


LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


def started_servers(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A fixture body: ``start(**kwargs)`` starts ``make(**kwargs)``; every
    server started is stopped after the test."""
    started: list[Any] = []

    def start(**kwargs: Any) -> Any:
        server = make(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., FaultySMTPServer]]:
    """``smtp_server(**kwargs)`` starts a real local SMTP server, stopped after the test."""
    yield from started_servers(FaultySMTPServer)


@pytest.fixture
def esp() -> Iterator[Callable[..., FakeESPServer]]:
    """``esp(**kwargs)`` starts a fake ESP server (Mailgun, Postmark, SES APIs),
    stopped after the test."""
    yield from started_servers(functools.partial(FakeESPServer, api_key=API_KEY))


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    CLOCK.now = START
    yield CLOCK
    CLOCK.now = START


@pytest.fixture(autouse=True)
def _fresh_health_state() -> Iterator[None]:
    health_store.reset_stores()
    CountingCache.CALLS.clear()
    yield
    health_store.reset_stores()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(redis_binary())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, emptied, and running again after the test."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.flush()
    yield redis_server
    if redis_server.process is None:
        redis_server.start()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    yield from running_postgres()


@pytest.fixture(scope="module")
def durable_postgres() -> Iterator[PostgresServer]:
    yield from running_postgres(durable=True)
