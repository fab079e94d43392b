"""The README's examples are valid: the quickstart settings pass the system
checks, construct, and route as the README says; the classifier example runs."""

from __future__ import annotations

import json
import os
import re
import smtplib
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.core.management import call_command

from mailrouter import Outcome, Stage
from mailrouter.compat import HAS_MAILERS
from mailrouter.testing.settings import router_settings

from .conftest import make_router

# The quickstart names SendGrid (as the brief does); Anymail warns it is unsupported.
pytestmark = pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def block(containing: str) -> str:
    [found] = [code for code in PYTHON_BLOCKS if containing in code]
    return found


def settings_from(code: str) -> dict[str, Any]:
    """Run a settings snippet as a settings module would, secrets from the environment."""
    env = {
        name: "readme-secret"
        for name in re.findall(r'os\.environ\["(\w+)"\]', code)
    }
    namespace: dict[str, Any] = {"os": os}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        exec(code, namespace)
    return {k: v for k, v in namespace.items() if k.isupper()}


def explain(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("mailrouter", "explain", *args, "--json", stdout=out)
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def problems() -> list[str]:
    return [
        f"{m.id}: {m.msg}"
        for m in checks.run_checks()
        if m.id and m.id.startswith("mailrouter") and m.level >= checks.ERROR
    ]


@pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS is Django 6.1+")
def test_quickstart_mailers() -> None:
    table = settings_from(block('"name": "eu"'))["MAILERS"]
    router = table["default"]
    leaves = {alias: spec for alias, spec in table.items() if alias != "default"}
    with router_settings(leaves, router["OPTIONS"], style="mailers"):
        assert problems() == []
        make_router()  # constructs, leaves included
        assert explain("--to", "kunde@example.de")["route"] == "eu"
        assert explain("--to", "a@example.com", "--tag", "newsletter")["route"] == "bulk"
        result = explain("--to", "a@example.com")
        assert result["route"] == "default"
        assert [c["alias"] for c in result["candidates"]] == ["mailgun", "postmark", "smtp"]


def test_quickstart_legacy() -> None:
    configured = settings_from(block('EMAIL_BACKEND = "mailrouter.backend.RouterBackend"'))
    table = configured["MAILROUTER"]
    with router_settings(table["MAILERS"], table["OPTIONS"], style="legacy"):
        assert problems() == []
        make_router()
        assert explain("--to", "x@example.com", "--from", "alerts@web-1")["route"] == "ops"
        assert explain("--to", "x@example.com")["route"] == "default"


def test_classifier_example() -> None:
    namespace: dict[str, Any] = {}
    exec(block("def classify("), namespace)
    classify = namespace["classify"]
    relay_denied = smtplib.SMTPRecipientsRefused(
        {"a@example.com": (554, b"5.7.1 <a@example.com>: Relay access denied")}
    )
    assert classify(relay_denied, Stage.ENVELOPE) is Outcome.NOT_SENT
    unknown_user = smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"5.1.1 No such user")})
    assert classify(unknown_user, Stage.ENVELOPE) is Outcome.REJECTED
    assert classify(ConnectionRefusedError(111, "refused"), Stage.CONNECT) is Outcome.NOT_SENT


@pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS is Django 6.1+")
def test_health_example() -> None:
    code = block('"max_cooldown": 600').replace('"default": {...},', "")
    configured = settings_from(code)
    leaves = settings_from(block('"name": "eu"'))["MAILERS"]
    leaves.pop("default")
    options = configured["MAILERS"]["default"]["OPTIONS"]
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    caches |= configured["CACHES"]
    with router_settings(leaves, options, style="mailers", CACHES=caches):
        assert problems() == []
        router = make_router()
        assert router.config.health_settings.policy("smtp").failure_threshold == 2
        assert router.config.health_settings.policy("mailgun").failure_threshold == 5


@pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS is Django 6.1+")
def test_testing_example() -> None:
    namespace: dict[str, Any] = {}
    exec(block("def test_orders_fail_over_to_the_backup_relay"), namespace)
    namespace["test_orders_fail_over_to_the_backup_relay"]()


def test_public_api_example_runs_and_every_export_exists() -> None:
    import mailrouter
    from mailrouter.classify import Classifier
    from mailrouter.health.breaker import State
    from mailrouter.probe import ProbeResult

    exec(block("mailrouter.MailRouterError"), {})
    for name in mailrouter.__all__:
        assert getattr(mailrouter, name) is not None, name
    # The exports are the very objects the router uses, not copies.
    assert (mailrouter.State, mailrouter.ProbeResult) == (State, ProbeResult)
    assert mailrouter.Classifier == Classifier


def test_routing_in_your_own_tests_example() -> None:
    """The keep_routing example runs as written against the MAILERS/MAILROUTER quickstart."""
    import unittest

    from django.core import mail

    namespace: dict[str, Any] = {}
    exec(block("class InvoiceMailTests"), namespace)
    leaves = {alias: {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"}
              for alias in ("eu_smtp", "eu_backup", "smtp")}
    options = {"routes": [
        {"name": "eu", "when": {"to_domain": ["*.de"]}, "mailers": ["eu_smtp", "eu_backup"]},
        {"mailers": ["smtp"]},
    ]}
    with router_settings(leaves, options):
        mail.outbox = []
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(namespace["InvoiceMailTests"])
        result = unittest.TextTestRunner(stream=StringIO()).run(suite)
    assert result.testsRun == 2 and result.wasSuccessful(), result.failures + result.errors
    fixture_code = block("def _keep_routing")
    compile(fixture_code, "README", "exec")
