"""``manage.py mailrouter``: status, explain, drain, undrain, probe.

Probes talk to real local SMTP servers; drain/undrain store their state in a
real Redis started by the suite.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage

from mailrouter.backend import RouterBackend
from mailrouter.health.store import LastError, store_for
from mailrouter.testing import FaultySMTPServer
from mailrouter.testing.redis import RedisServer
from mailrouter.testing.settings import router_settings

from . import fakes
from .commands import run
from .health_fixtures import FakeClock, redis_caches

SECRET = "hunter2-very-secret"
HEALTH = {"failure_threshold": 2, "failure_rate": None, "cooldown": 60,
          "clock": "tests.health_fixtures.CLOCK"}


def mailers(smtp_port: int = 1) -> dict[str, Any]:
    return {
        "a": {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": "a"}},
        "b": {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": "b"}},
        "smtp": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": smtp_port, "username": "app",
                        "password": SECRET, "timeout": 2},
        },
    }


def options(health: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "routes": [
            {"name": "eu", "when": {"to_domain": ["*.de"]}, "mailers": ["smtp", "b"]},
            {"name": "default", "mailers": ["a", "b"]},
        ],
        "health": {**HEALTH, **(health or {})},
    }


def open_breaker(router: RouterBackend, alias: str = "a", failures: int = 2) -> None:
    fakes.SCRIPTS[alias].extend(["refuse_connect"] * failures)
    router.fail_silently = True
    for _ in range(failures):
        router.send_messages([EmailMessage("s", "b", "app@example.com", ["u@example.com"])])


def test_status_shows_every_mailer_with_its_breaker(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    router = configure(mailers(), options())
    open_breaker(router)
    code, text = run("status")
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["MAILER", "BACKEND", "STATE"]
    row_a = next(line for line in lines if line.startswith("a "))
    assert "tests.fakes.ScriptedBackend" in row_a and "open (retry" in row_a
    assert "2 in a row" in row_a and "Connection refused" in row_a
    assert next(line for line in lines if line.startswith("b ")).split()[2] == "closed"
    assert "per process" in text  # the embedded store only shows this process


def test_status_json_and_redaction(configure: Callable[..., RouterBackend],
                                   clock: FakeClock) -> None:
    router = configure(mailers(), options())
    settings = router.config.health_settings
    store_for(settings).record_failure(
        "smtp", settings.policy("smtp"), clock.now,
        LastError(clock.now, "not_sent", f"535 authentication failed for app:{SECRET}"),
    )
    code, text = run("status", "--json")
    assert code == 0 and SECRET not in text
    rows = {row["alias"]: row for row in json.loads(text)["mailers"]}
    assert set(rows) == {"smtp", "a", "b"}
    assert rows["smtp"]["state"] == "closed"
    assert rows["smtp"]["consecutive_failures"] == 1
    assert "***" in rows["smtp"]["last_error"]
    assert rows["smtp"]["backend"] == "django.core.mail.backends.smtp.EmailBackend"


def test_explain_names_the_route_and_the_order_with_skip_reasons(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    router = configure(mailers(), options())
    open_breaker(router)
    opened = dict(fakes.OPEN_CALLS)
    code, text = run("explain", "--to", "ann@example.com", "--from", "app@example.com")
    assert code == 0
    assert "route:  default" in text
    assert "1. a  [open]  skip: circuit open until" in text
    assert "2. b  [closed]  try" in text

    code, text = run("explain", "--to", "ann@example.com", "--cc", "bob@shop.de", "--json")
    result = json.loads(text)
    assert result["route"] == "eu"
    assert [c["alias"] for c in result["candidates"]] == ["smtp", "b"]
    assert opened == fakes.OPEN_CALLS  # nothing was sent or even opened


def test_explain_reports_when_every_candidate_is_skipped_and_when_nothing_matches(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    router = configure(mailers(), options())
    open_breaker(router, "a")
    # a is skipped, so b is tried first; after b fails, a is the last resort
    # and must fail too to stay open.
    fakes.SCRIPTS["a"].extend(["refuse_connect"] * 2)
    open_breaker(router, "b")
    code, text = run("explain", "--to", "x@example.com", "--mailers", "a,b")
    assert code == 0
    assert "route:  (pinned)" in text
    assert "tries them all in order anyway" in text
    code, text = run("explain", "--to", "x@example.com", "--mailers", "nope")
    assert code == 1 and "'nope'" in text


def test_usage_errors_exit_2(configure: Callable[..., RouterBackend], clock: FakeClock) -> None:
    configure(mailers(), options())
    assert run("explain", "--to", "x@example.com", "--router", "nope")[0] == 2
    assert run("explain", "--to", "not-an-address")[0] == 2
    assert run("explain", "--to", "x@example.com", "--header", "novalue")[0] == 2
    code, text = run("probe", "nope")
    assert code == 2 and "unknown mailer alias 'nope'" in text


def test_drain_refuses_a_per_process_store(configure: Callable[..., RouterBackend],
                                           clock: FakeClock) -> None:
    configure(mailers(), options())
    code, text = run("drain", "a")
    assert code == 3 and "per process" in text


def test_drain_and_undrain_fleet_wide_through_redis(
    configure: Callable[..., RouterBackend], clock: FakeClock, redis: RedisServer,
) -> None:
    router = configure(mailers(), options({"cache": "health"}), CACHES=redis_caches(redis))
    assert run("drain", "a", "--for", "0")[0] == 2
    assert run("drain", "nope")[0] == 2
    code, text = run("drain", "a", "--for", "15m", "--reason", "provider maintenance")
    assert code == 0 and text.startswith("drained a until ")

    router.fail_silently = True
    message = EmailMessage("s", "b", "app@example.com", ["u@example.com"])
    router.send_messages([message])
    first = message.mailrouter_attempts[0]  # type: ignore[attr-defined]
    assert (first.alias, first.outcome.value) == ("a", "skipped")
    assert "provider maintenance" in first.error

    rows = {r["alias"]: r for r in json.loads(run("status", "--json")[1])["mailers"]}
    assert rows["a"]["drained"] is True and rows["a"]["drain_reason"] == "provider maintenance"
    assert run("undrain", "a") == (0, "undrained a\n")
    assert run("undrain", "a") == (0, "a was not drained\n")
    router.send_messages([message])
    assert message.sent_using == "a"  # type: ignore[attr-defined]


def test_status_exits_3_when_the_health_cache_is_down(
    configure: Callable[..., RouterBackend], clock: FakeClock, redis: RedisServer,
) -> None:
    configure(mailers(), options({"cache": "health"}), CACHES=redis_caches(redis))
    redis.stop()
    code, text = run("status")
    assert code == 3 and "unreachable" in text


@pytest.fixture
def smtp_server() -> Iterator[FaultySMTPServer]:
    with FaultySMTPServer(username="app", password=SECRET) as server:
        yield server


def test_probe_opens_and_closes_without_sending(
    configure: Callable[..., RouterBackend], clock: FakeClock, smtp_server: FaultySMTPServer,
) -> None:
    configure(mailers(smtp_server.port), options())
    code, text = run("probe", "smtp")
    assert code == 0 and text.startswith("smtp: ok, authenticated (opened and closed in ")
    assert smtp_server.connections_opened == 1
    assert smtp_server.messages == [] and smtp_server.transactions == 0


@pytest.mark.parametrize("mode", ["refuse", "auth_fail", "tempfail_connect"])
def test_probe_failure_exits_1_with_outcome_and_redacted_error(
    configure: Callable[..., RouterBackend], clock: FakeClock, smtp_server: FaultySMTPServer,
    mode: str,
) -> None:
    configure(mailers(smtp_server.port), options())
    smtp_server.mode = mode
    code, text = run("probe", "smtp", "--json")
    assert code == 1
    result = json.loads(text.split("\nCommandError")[0])
    assert result["ok"] is False and result["outcome"] == "not_sent"
    assert SECRET not in text


def test_probe_of_a_router_alias_is_a_usage_error(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    table = {**mailers(), "inner": {"BACKEND": "mailrouter.backend.RouterBackend",
                                    "OPTIONS": {"routes": [{"mailers": ["a"]}]}}}
    configure(table, options())
    code, text = run("probe", "inner")
    assert code == 2 and "is a router" in text


@pytest.mark.parametrize(
    ("sending_enabled", "access_key", "expected"),
    [
        (True, "right", "ok"),
        (False, "right", "not_sent"),  # the account is paused: do not trust it
        (True, "wrong", "not_sent"),  # credentials refused
    ],
)
def test_probe_asks_amazon_ses_for_the_account_without_sending(
    configure: Callable[..., RouterBackend], clock: FakeClock,
    sending_enabled: bool, access_key: str, expected: str,
) -> None:
    from mailrouter.testing import FakeESPServer

    from .esp_fixtures import API_KEY, amazon_ses

    with FakeESPServer(api_key=API_KEY if access_key == "right" else "another-key") as server:
        server.ses_sending_enabled = sending_enabled
        configure({**mailers(), "ses": amazon_ses(server)}, options())
        code, text = run("probe", "ses", "--json")
        assert server.messages == [] and server.requests_seen == 1  # GetAccount, no send
    result = json.loads(text.split("\nCommandError")[0])
    if expected == "ok":
        assert code == 0 and result["ok"] is True
        assert result["detail"].startswith("SES account: sending enabled, 0 of 50000")
    else:
        assert code == 1 and result["outcome"] == expected
        assert "ses-secret-not-for-logs" not in text
        if not sending_enabled:
            assert "sending disabled" in result["error"]


def test_a_router_probes_its_mailers_for_code_too(
    configure: Callable[..., RouterBackend], clock: FakeClock, smtp_server: FaultySMTPServer,
) -> None:
    router = configure(mailers(smtp_server.port), options())
    result = router.probe("smtp")
    assert result.ok and result.outcome is None and smtp_server.transactions == 0
    smtp_server.mode = "auth_fail"
    failed = router.probe("smtp", timeout=2)
    assert not failed.ok and failed.outcome is not None and failed.outcome.value == "not_sent"
    assert failed.error is not None and SECRET not in failed.error
    with pytest.raises(KeyError, match="'nope' is not a mailer alias"):
        router.probe("nope")


# -- issue #7: usage errors are usage errors; a cache outage hides nothing else ----------------


def test_drain_and_undrain_refuse_a_router_alias(
    configure: Callable[..., RouterBackend], clock: FakeClock, redis: RedisServer,
) -> None:
    nested = {**mailers(), "eu": {"BACKEND": "mailrouter.backend.RouterBackend",
                                  "OPTIONS": {"routes": [{"mailers": ["a"]}]}}}
    router = configure(nested, options({"cache": "health"}), CACHES=redis_caches(redis))
    names = [router.alias or "MAILROUTER", "eu"] if router.alias else ["eu"]
    for name in names:
        for verb in ("drain", "undrain"):
            code, text = run(verb, name)
            assert code == 2, (verb, name, text)
            assert "is a router" in text or "unknown mailer alias" in text
    assert run("status")[0] == 0


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_probe_with_a_bad_timeout_is_a_usage_error(
    configure: Callable[..., RouterBackend], clock: FakeClock, value: str,
) -> None:
    configure(mailers(), options())
    code, text = run("probe", "smtp", f"--timeout={value}", "--json")
    assert code == 2 and "--timeout" in text
    assert json.loads(text.split("\nCommandError")[0])["error"].startswith("--timeout")


def test_explain_without_the_health_cache_shows_the_route_and_unknown_health(
    configure: Callable[..., RouterBackend], clock: FakeClock, redis: RedisServer,
) -> None:
    configure(mailers(), options({"cache": "health"}), CACHES=redis_caches(redis))
    redis.stop()
    code, text = run("explain", "--to", "ann@shop.de")
    assert code == 3
    assert "route:  eu" in text and "1. smtp  [unknown]  try" in text and "2. b  [unknown]" in text
    assert "health unknown: health cache" in text
    code, text = run("explain", "--to", "ann@shop.de", "--json")
    data = json.loads(text.split("\nCommandError")[0])
    assert code == 3 and data["route"] == "eu" and data["health_error"]
    assert [c["health"] for c in data["candidates"]] == ["unknown", "unknown"]


def test_status_json_stays_json_when_the_cache_is_down_or_settings_are_bad(
    configure: Callable[..., RouterBackend], clock: FakeClock, redis: RedisServer,
) -> None:
    configure(mailers(), options({"cache": "health"}), CACHES=redis_caches(redis))
    redis.stop()
    code, text = run("status", "--json")
    data = json.loads(text.split("\nCommandError")[0])
    assert code == 3 and "unreachable" in data["error"]
    assert {row["alias"]: row["state"] for row in data["mailers"]} == {
        "smtp": "unknown", "b": "unknown", "a": "unknown"
    }
    with router_settings(mailers(), {"routes": [{"mailers": ["nope"]}]}):
        code, text = run("status", "--json")
    assert code == 2 and "'nope'" in json.loads(text.split("\nCommandError")[0])["error"]


def test_status_shows_each_leafs_timeout_and_where_it_comes_from(
    configure: Callable[..., RouterBackend], clock: FakeClock,
) -> None:
    table = {
        **mailers(),
        "bare_smtp": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                      "OPTIONS": {"host": "127.0.0.1", "port": 1}},
        "mailgun": {"BACKEND": "anymail.backends.mailgun.EmailBackend",
                    "OPTIONS": {"api_key": SECRET, "api_url": "http://127.0.0.1:1/v3/"}},
    }
    configure(table, {"routes": [{"mailers": ["smtp", "bare_smtp", "mailgun", "b"]}],
                      "timeout": 10, "timeouts": {"b": 7}})
    rows = {r["alias"]: r for r in json.loads(run("status", "--json")[1])["mailers"]}
    assert (rows["smtp"]["timeout"], rows["smtp"]["timeout_source"]) == (
        2, "mailer's own"
    )
    assert (rows["bare_smtp"]["timeout"], rows["bare_smtp"]["timeout_source"]) == (
        10, "router timeout"
    )
    # Anymail's own 30 s default is a value: the router's timeout does not shorten it.
    assert rows["mailgun"]["timeout"] == 30
    assert (rows["b"]["timeout"], rows["b"]["timeout_source"]) == (7, "router timeouts")
    assert "10s (router timeout)" in run("status")[1]
