"""``probe`` says what it proved: Anymail's real Mailgun and Postmark
backends against the fake ESP's authenticated reads (Mailgun's domain,
Postmark's server), so an ESP that refuses the key, or answers everything
with 503, fails the probe instead of passing a HEAD request."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailrouter.backend import RouterBackend
from mailrouter.testing import FakeESPServer, FaultySMTPServer

from .commands import run
from .esp_fixtures import API_KEY, mailgun, postmark
from .health_fixtures import FakeClock


@pytest.fixture
def esp() -> Iterator[FakeESPServer]:
    with FakeESPServer(api_key=API_KEY) as server:
        yield server


def probe(configure: Callable[..., RouterBackend], mailers: dict[str, Any],
          alias: str) -> tuple[int, dict[str, Any], str]:
    configure(mailers, {"routes": [{"mailers": list(mailers)}]})
    code, text = run("probe", alias, "--json")
    _, plain = run("probe", alias)
    return code, json.loads(text.split("\nCommandError")[0]), plain


@pytest.mark.parametrize("build, detail", [
    (mailgun, "Mailgun accepted the API key; domain mg.example.com is active"),
    (postmark, "Postmark accepted the server token (server 'Fake Postmark server')"),
])
def test_a_good_key_is_proven_authenticated(
    configure: Callable[..., RouterBackend], clock: FakeClock, esp: FakeESPServer,
    build: Callable[..., dict[str, Any]], detail: str,
) -> None:
    code, result, plain = probe(configure, {"esp": build(esp)}, "esp")
    assert code == 0 and result["ok"] and result["proven"] == "authenticated"
    assert result["detail"] == detail
    assert plain.startswith("esp: ok, authenticated (opened and closed in ")
    assert esp.messages == [] and esp.requests_seen == 2  # one read per probe, no send


@pytest.mark.parametrize("build", [mailgun, postmark])
@pytest.mark.parametrize("fault, expected", [
    ("wrong_key", "refused the credentials"),
    ("unauthorized_401", "refused the credentials"),
    ("error_503", "answered HTTP 503"),
])
def test_a_refused_key_or_a_failing_esp_fails_the_probe(
    configure: Callable[..., RouterBackend], clock: FakeClock, esp: FakeESPServer,
    build: Callable[..., dict[str, Any]], fault: str, expected: str,
) -> None:
    if fault == "wrong_key":
        options = {"api_key": "key-wrong-wrong-wrong"} if build is mailgun else {
            "server_token": "token-wrong-wrong-wrong"}
        mailers = {"esp": build(esp, **options)}
    else:
        esp.mode = fault
        mailers = {"esp": build(esp)}
    code, result, plain = probe(configure, mailers, "esp")
    assert code == 1 and result["ok"] is False and result["outcome"] == "not_sent"
    assert expected in result["error"] and "failed (not_sent)" in plain
    assert "wrong-wrong" not in json.dumps(result) + plain
    assert esp.messages == []


def test_mailgun_without_a_sender_domain_reads_the_domain_list(
    configure: Callable[..., RouterBackend], clock: FakeClock, esp: FakeESPServer,
) -> None:
    code, result, _ = probe(configure, {"esp": mailgun(esp, sender_domain=None)}, "esp")
    assert code == 0 and result["proven"] == "authenticated"
    assert result["detail"] == "Mailgun accepted the API key (domain list read)"


def test_smtp_without_a_login_is_only_reachable(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    with FaultySMTPServer() as smtp:
        mailers = {"smtp": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                            "OPTIONS": {"host": "127.0.0.1", "port": smtp.port}}}
        code, result, _ = probe(configure, mailers, "smtp")
    assert code == 0 and result["proven"] == "reachable"
    assert result["detail"] == "SMTP server greeted us (no login configured)"
