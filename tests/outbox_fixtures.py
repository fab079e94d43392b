"""Outbox settings for tests: an OutboxBackend in front of a router, in either
settings style (Django 6.1 MAILERS, or EMAIL_BACKEND + MAILROUTER)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.test.utils import override_settings

from mailrouter.compat import HAS_MAILERS
from mailrouter.testing.settings import ROUTER

OUTBOX = "mailrouter.outbox.OutboxBackend"


@contextmanager
def outbox_settings(
    leaves: Mapping[str, Any],
    router_options: Mapping[str, Any],
    outbox_options: Mapping[str, Any] | None = None,
    *,
    style: str = "auto",
    **extra: Any,
) -> Iterator[None]:
    """``mailers`` style: MAILERS = {"default": outbox → "router", "router": ..., leaves}.
    ``legacy`` style: EMAIL_BACKEND = OutboxBackend, MAILROUTER = {MAILERS, OPTIONS, OUTBOX}."""
    if style == "auto":
        style = "mailers" if HAS_MAILERS else "legacy"
    outbox = dict(outbox_options or {})
    if style == "mailers":
        table = {
            "default": {"BACKEND": OUTBOX, "OPTIONS": {"mailer": "router", **outbox}},
            "router": {"BACKEND": ROUTER, "OPTIONS": dict(router_options)},
            **leaves,
        }
        with override_settings(MAILERS=table, **extra):
            yield
    else:
        with override_settings(
            EMAIL_BACKEND=OUTBOX,
            MAILROUTER={"MAILERS": dict(leaves), "OPTIONS": dict(router_options),
                        "OUTBOX": outbox},
            **extra,
        ):
            if hasattr(settings, "MAILERS"):
                del settings.MAILERS
            yield
