"""Shared fixtures: configure the router in either settings style, per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import django
import pytest
from django.conf import settings
from django.core import mail
from django.test.utils import override_settings
from hypothesis import settings as hypothesis_settings

from mailrouter.backend import RouterBackend
from mailrouter.testing import FaultySMTPServer

from . import fakes

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

ROUTER = "mailrouter.backend.RouterBackend"
HAS_MAILERS = django.VERSION >= (6, 1)
STYLES = ["mailers", "legacy"] if HAS_MAILERS else ["legacy"]


@contextmanager
def router_settings(
    mailers: Mapping[str, Any], options: Mapping[str, Any], *, style: str = "auto", **extra: Any
) -> Iterator[None]:
    """Configure the router as a user would.

    ``mailers`` style (Django 6.1+): MAILERS with "default" = the router.
    ``legacy`` style: EMAIL_BACKEND + MAILROUTER, and no MAILERS at all.
    """
    if style == "auto":
        style = "mailers" if HAS_MAILERS else "legacy"
    if style == "mailers":
        table = {"default": {"BACKEND": ROUTER, "OPTIONS": dict(options)}, **mailers}
        with override_settings(MAILERS=table, **extra):
            yield
    else:
        with override_settings(
            EMAIL_BACKEND=ROUTER,
            MAILROUTER={"MAILERS": dict(mailers), "OPTIONS": dict(options)},
            **extra,
        ):
            if hasattr(settings, "MAILERS"):
                del settings.MAILERS
            yield


def make_router() -> RouterBackend:
    """The router exactly as Django's own send path creates it."""
    if HAS_MAILERS and hasattr(settings, "MAILERS"):
        backend = mail.mailers["default"]  # type: ignore[attr-defined]
    else:
        backend = mail.get_connection()
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


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., FaultySMTPServer]]:
    """``smtp_server(**kwargs)`` starts a real local SMTP server, stopped after the test."""
    started: list[FaultySMTPServer] = []

    def start(**kwargs: Any) -> FaultySMTPServer:
        server = FaultySMTPServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
