"""Keyword arguments a router built without an alias (``get_connection(**kwargs)``,
the pre-6.1 path) does not know are ignored the way Django's own backends
ignore them, not raised."""

from __future__ import annotations

import warnings
from typing import Any

from django.core import mail
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

from mailrouter.backend import RouterBackend
from mailrouter.testing.settings import router_settings

from .conftest import LOCMEM
from .messages import msg

LEAVES = {"x": {"BACKEND": LOCMEM}}
OPTIONS = {"routes": [{"mailers": ["x"]}]}


def categories(build: Any) -> list[type[Warning]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build()
    return [w.category for w in caught]


def test_unknown_keyword_arguments_are_ignored_as_djangos_backends_ignore_them() -> None:
    with router_settings(LEAVES, OPTIONS, style="legacy"):
        # Django's own backend: ignored, with a RemovedInDjango2028Warning on
        # 6.1, silently on 5.2 and 6.0. The router does the same.
        django_warns = categories(lambda: LocmemBackend(retries=3, use_ssl=True))
        router_warns = categories(lambda: RouterBackend(retries=3, use_ssl=True))
        assert router_warns == django_warns
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            router = RouterBackend(retries=3)
        assert all("'retries'" in str(w.message) for w in caught)
        message = msg()
        assert router.send_messages([message]) == 1 and len(mail.outbox) == 1
        assert message.sent_using == "x"  # type: ignore[attr-defined]


def test_router_options_given_as_keyword_arguments_still_apply() -> None:
    with router_settings(LEAVES, OPTIONS, style="legacy"):
        assert categories(lambda: RouterBackend(username=None, password=None)) == []
        router = RouterBackend(timeout=5)
        assert router.config.timeout == 5
