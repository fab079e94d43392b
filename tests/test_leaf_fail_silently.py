"""A leaf whose OPTIONS say ``fail_silently``: the router takes the option out
before building the leaf (it must see every error to judge the attempt; its
own ``fail_silently`` decides what reaches the caller), so Anymail's
"will drop support for fail_silently" DeprecationWarning never fires, and the
system checks say so once per leaf (``mailrouter.W003``)."""

from __future__ import annotations

import warnings
from typing import Any

from django.core import checks

from mailrouter.checks import check_mailrouter
from mailrouter.compat import HAS_MAILERS
from mailrouter.testing import FakeESPServer
from mailrouter.testing.settings import ROUTER, router_settings

from .conftest import make_router
from .esp_fixtures import API_KEY, mailgun, postmark
from .messages import kinds, msg


def test_a_quiet_leaf_fails_over_without_deprecation_warnings(style: str) -> None:
    with (
        FakeESPServer(api_key=API_KEY, mode="error_503") as down,
        FakeESPServer(api_key=API_KEY) as up,
    ):
        leaves = {"mailgun": mailgun(down, timeout=2), "postmark": postmark(up, timeout=2)}
        leaves["mailgun"]["OPTIONS"]["fail_silently"] = True
        options = {"routes": [{"mailers": ["mailgun", "postmark"]}], "health": False}
        with (
            router_settings(leaves, options, style=style),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            message = msg("quiet")
            assert make_router().send_messages([message]) == 1
    assert kinds(message) == [("mailgun", "not_sent"), ("postmark", "accepted")]
    assert len(up.messages) == 1
    deprecations = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert deprecations == []


def test_a_quiet_leaf_is_reported_once_at_startup(style: str) -> None:
    leaves: dict[str, Any] = {
        "quiet": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend",
                  "OPTIONS": {"fail_silently": True}},
        "loud": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
    }
    if HAS_MAILERS and style == "mailers":
        # A second router routing to the same leaf: still one warning.
        leaves["nested"] = {"BACKEND": ROUTER, "OPTIONS": {"routes": [{"mailers": ["quiet"]}]}}
    options = {"routes": [{"mailers": ["quiet", "loud"]}], "health": False}
    with router_settings(leaves, options, style=style):
        found = [m for m in check_mailrouter() if m.level >= checks.WARNING]
    label = "MAILERS['quiet']" if style == "mailers" else "MAILROUTER['MAILERS']['quiet']"
    assert [(m.id, m.msg.split(":")[0]) for m in found] == [("mailrouter.W003", label)]
    assert "'fail_silently' is ignored" in found[0].msg
    assert "the router's own fail_silently decides" in found[0].msg
