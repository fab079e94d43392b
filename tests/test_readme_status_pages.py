"""The status page guide's examples (docs/guides/status-pages.md) are valid: the
options construct a router (pages validated, nothing fetched) and the URLconf
resolves."""

from __future__ import annotations

import os
import sys
import types
from typing import Any

from django.test import Client, override_settings
from django.urls import clear_url_caches

from mailrouter.testing.settings import router_settings

from .conftest import make_router
from .test_docs import block

TOKEN = "readme-webhook-token-0123456789"

LEAVES = {alias: {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}
          for alias in ("mailgun", "postmark", "smtp")}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
          "health": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                     "LOCATION": "readme-health"}}


def test_readme_status_page_options_construct_a_router(monkeypatch: Any) -> None:
    monkeypatch.setenv("MAILROUTER_STATUS_WEBHOOK_TOKEN", TOKEN)
    namespace: dict[str, Any] = {"os": os}
    exec(block('"components": ["api", "smtp"]'), namespace)
    options: dict[str, Any] = namespace["router_options"]
    with router_settings(LEAVES, options, CACHES=CACHES):
        config = make_router().config
    pages = config.status_pages
    assert pages["mailgun"].components == ("API", "Outbound Delivery")
    assert type(pages["postmark"].source).__name__ == "PostmarkSource"
    assert config.status_webhook_token == TOKEN


def test_readme_urlconf_routes_the_webhook() -> None:
    namespace: dict[str, Any] = {}
    exec(block('include("mailrouter.urls")'), namespace)
    module = types.ModuleType("readme_urls")
    module.urlpatterns = namespace["urlpatterns"]  # type: ignore[attr-defined]
    sys.modules["readme_urls"] = module
    try:
        with override_settings(ROOT_URLCONF="readme_urls"):
            clear_url_caches()
            # No router with a token here: every token is wrong, so 404, never 500.
            response = Client().post("/mailrouter/status/mailgun/some-token-value-123/", b"{}",
                                     content_type="application/json")
            assert response.status_code == 404
    finally:
        del sys.modules["readme_urls"]
        clear_url_caches()
