"""mailrouter.testing.settings and mailrouter.testing.redis, as tests,
benchmarks and the demo use them."""

from __future__ import annotations

import socket

import pytest
from django.conf import settings

from mailrouter.compat import HAS_MAILERS
from mailrouter.testing.redis import RedisServer
from mailrouter.testing.settings import ROUTER, mail_settings, resolve_style, router_settings

from .conftest import make_router
from .health_fixtures import redis_binary

LEAVES = {"a": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
OPTIONS = {"routes": [{"mailers": ["a"]}]}


def test_legacy_settings_shape() -> None:
    assert mail_settings(LEAVES, OPTIONS, style="legacy") == {
        "EMAIL_BACKEND": ROUTER,
        "MAILROUTER": {"MAILERS": LEAVES, "OPTIONS": OPTIONS},
    }


@pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS is Django 6.1+")
def test_mailers_settings_shape_and_auto() -> None:
    expected = {"MAILERS": {"default": {"BACKEND": ROUTER, "OPTIONS": OPTIONS}, **LEAVES}}
    assert mail_settings(LEAVES, OPTIONS, style="mailers") == expected
    assert resolve_style("auto") == "mailers"


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown settings style"):
        resolve_style("yaml")


@pytest.mark.skipif(HAS_MAILERS, reason="Django 6.1+ has MAILERS")
def test_mailers_style_needs_django_61() -> None:
    assert resolve_style("auto") == "legacy"
    with pytest.raises(ValueError, match=r"Django 6\.1"):
        resolve_style("mailers")


def test_router_settings_in_each_style(style: str) -> None:
    with router_settings(LEAVES, OPTIONS, style=style):
        assert hasattr(settings, "MAILERS") is (style == "mailers")
        router = make_router()
        assert router.config.routes[0].mailers == ("a",)


def test_redis_server_starts_flushes_and_stops() -> None:
    with RedisServer(redis_binary()) as server:
        client = server.client()
        client.set("k", "v")
        server.flush()
        assert client.get("k") is None
        assert server.cache_settings()["LOCATION"] == server.url
        client.get("k")
        assert server.commands()["get"] >= 2
        port = server.port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
