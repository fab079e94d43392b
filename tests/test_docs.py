"""The documentation's examples run, and its reference pages cover the code.

Every ```python block under docs/ is executed: settings snippets are applied
as settings and must pass the system checks and construct every router;
other blocks run as written. Blocks whose meaning needs more than "it runs"
(a send whose result a comment states, a test function, a signal receiver)
are claimed by a test below that runs them and checks what the page says.
Shell lines (``$ python manage.py mailrouter ...``) must parse with the
command's real parser. The reference pages must list every router option,
health key, matcher, signal, system check ID and command option in the code.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import sys
import tomllib
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from django.core import checks, mail
from django.core.management import call_command
from django.test import RequestFactory
from django.test.utils import override_settings

from mailrouter.backend import RouterBackend
from mailrouter.testing import FaultySMTPServer

HAS_MAILERS = django.VERSION >= (6, 1)
ROUTER = "mailrouter.backend.RouterBackend"
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
# Fenced blocks: ```lang ... ``` (the closing fence as long as the opening one).
FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[^\s`]*)[^\n]*\n(?P<code>.*?)^(?P=fence)[ \t]*$",
                   re.M | re.S)
# Languages a block may have: a Python example must be ```python to be found.
LANGUAGES = {"python", "console", "text", "{toctree}"}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def read_blocks() -> list[Block]:
    blocks = []
    for path in PAGES:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(
                Block(str(path.relative_to(DOCS)), line, match["lang"], match["code"])
            )
    return blocks


BLOCKS = read_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]

# Blocks checked by a dedicated test: a unique substring → that test's name (in this
# module, or "tests/<file>.py::<name>" for a test elsewhere that finds the block by
# the same substring).
CLAIMS = {
    "message.mailrouter_status                    #": "test_quickstart_send",
    'message.mailers = ["transactional", "relay"]': "test_pinned_send",
    '"name": "alerts"': "test_routing_example_routes",
    '"name": "vip"': "test_every_matcher",
    "def is_vip(": "test_every_matcher",
    "except DeliveryError as error": "test_delivery_error_example",
    "def classify(": "test_classifier_example",
    "def test_orders_fail_over_to_the_backup_relay": "test_testing_examples",
    "def test_a_read_timeout_is_not_resent": "test_testing_examples",
    "CLOCK.now += 30": "test_clock_example",
    "def on_state_changed(": "test_state_changed_receiver",
    "def count_sent(": "test_signal_receivers",
    "def mail_ready(": "test_probe_view",
    '"name": "ops"': "test_quickstart_legacy",
    "class InvoiceMailTests": "test_routing_in_your_own_tests",
    "mailrouter.MailRouterError": "test_public_api",
    '"concurrency": 16': "test_concurrency_example",
    '"weights": {"mailgun": 95, "postmark": 5}': "test_weighted_migration_example",
    '"rate_limits": {"ses": "14/s"': "test_rate_limits_example",
    '"components": ["api", "smtp"]':
        "tests/test_readme_status_pages.py::test_readme_status_page_options_construct_a_router",
    '"mailer": "router"': "tests/test_outbox_readme.py::test_outbox_mailers_example",
    'EMAIL_BACKEND = "mailrouter.outbox.OutboxBackend"':
        "tests/test_outbox_readme.py::test_outbox_legacy_example",
    'include("mailrouter.urls")':
        "tests/test_readme_status_pages.py::test_readme_urlconf_routes_the_webhook",
    'explanation = mailers["default"].explain(message)': "test_explain_example",
    '"LOCATION": "redis://redis.internal:6379/3"': "test_health_example",
    "class PigeonKind(": "test_leaf_kind_example",
}


def claimed(block: Block) -> bool:
    return any(substring in block.code for substring in CLAIMS)


def block(containing: str, *, exact: bool = True) -> str:
    found = [b.code for b in PYTHON if containing in b.code]
    if exact:
        assert len(found) == 1, f"{len(found)} python blocks contain {containing!r}"
    return found[0]


# -- running examples -----------------------------------------------------------


class LegacyMailers:
    """Django 5.2 and 6.0 have no ``django.core.mail.mailers``; there the router the
    examples reach as ``mailers["default"]`` is ``get_connection()``, as the pages say."""

    def __getitem__(self, alias: str) -> Any:
        if alias != "default":
            raise KeyError(alias)
        return mail.get_connection()


@contextmanager
def as_a_user_runs_it() -> Iterator[pytest.MonkeyPatch]:
    """Any warning fails the example (a deprecated Django API, an ESP Anymail no
    longer supports); before Django 6.1, ``mailers`` is :class:`LegacyMailers`."""
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("error")
        if not HAS_MAILERS:
            patch.setattr(mail, "mailers", LegacyMailers(), raising=False)
        yield patch


def run(code: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run an example as a settings module or script would, secrets from the environment."""
    namespace = {} if namespace is None else namespace
    with as_a_user_runs_it() as patch:
        for name in re.findall(r'os\.environ\["(\w+)"\]', code):
            patch.setenv(name, f"docs-secret-{name.lower()}")
        exec(compile(code, "<docs example>", "exec"), namespace)
    return namespace


def settings_of(namespace: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in namespace.items() if k.isupper()}


def as_legacy(table: dict[str, Any]) -> dict[str, Any]:
    """A MAILERS example with its router at "default", in the MAILROUTER style."""
    router = table["default"]
    assert router["BACKEND"] == ROUTER
    leaves = {alias: spec for alias, spec in table.items() if alias != "default"}
    return {"EMAIL_BACKEND": ROUTER,
            "MAILROUTER": {"MAILERS": leaves, "OPTIONS": router["OPTIONS"]}}


@contextmanager
def applied(configured: dict[str, Any]) -> Iterator[list[RouterBackend]]:
    """Apply an example's settings (MAILERS examples in the MAILROUTER style before
    Django 6.1) and yield every router they define, constructed as Django would."""
    values = {k: v for k, v in configured.items() if k in ("MAILERS", "MAILROUTER",
                                                           "EMAIL_BACKEND", "CACHES")}
    if "CACHES" in values:
        values["CACHES"] = {**settings.CACHES, **values["CACHES"]}
    if "MAILERS" in values and not HAS_MAILERS:
        values |= as_legacy(values.pop("MAILERS"))
    with override_settings(**values):
        if "MAILERS" not in values and hasattr(settings, "MAILERS"):
            del settings.MAILERS
        if "MAILERS" in values:
            routers = [mail.mailers[alias]  # type: ignore[attr-defined]
                       for alias, spec in values["MAILERS"].items()
                       if spec.get("BACKEND") == ROUTER]
        else:
            routers = [mail.get_connection()]
        assert routers and all(isinstance(r, RouterBackend) for r in routers)
        yield routers  # type: ignore[misc]


def check_messages() -> list[str]:
    return [
        f"{m.id}: {m.msg}"
        for m in checks.run_checks(include_deployment_checks=False)
        if m.id and m.id.startswith("mailrouter")
    ]


# Health-cache advice that examples without a shared cache are expected to get.
EXPECTED_ADVICE = ("mailrouter.W103",)


def check_example(code: str) -> dict[str, Any]:
    configured = settings_of(run(code))
    if "INSTALLED_APPS" in configured:
        for app in configured["INSTALLED_APPS"]:
            __import__(app)
    if {"MAILERS", "MAILROUTER"} & configured.keys():
        with applied(configured), as_a_user_runs_it():
            problems = [p for p in check_messages() if not p.startswith(EXPECTED_ADVICE)]
            assert problems == []
    return configured


@pytest.mark.parametrize("example", [b for b in PYTHON if not claimed(b)], ids=str)
def test_example_runs(example: Block) -> None:
    check_example(example.code)


def secrets_unset(code: str, patch: pytest.MonkeyPatch) -> None:
    """Unset every environment variable the example reads, as on a new machine."""
    for name in re.findall(r'os\.environ(?:\.get\(|\[)"(\w+)"', code):
        patch.delenv(name, raising=False)


@pytest.mark.parametrize("example", [b for b in PYTHON if b.page.startswith("start/")
                                     and re.search(r"^(MAILERS|MAILROUTER) = ", b.code, re.M)],
                         ids=str)
def test_a_quickstart_passes_check_before_its_secrets_are_set(
    example: Block, monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets_unset(example.code, monkeypatch)
    assert "os.environ[" not in example.code  # a KeyError before `check` could run
    check_example(example.code)


def check_commented_values(code: str, namespace: dict[str, Any]) -> int:
    """``expression  # value`` lines: the expression equals the value the page shows."""
    checked = 0
    for line in code.splitlines():
        match = re.match(r"^(?P<expr>[^#\s][^#]*?)\s+#\s*(?P<value>['\[\d].*?)\s*$", line)
        if match is None or "=" in match["expr"].replace("==", ""):
            continue
        assert eval(match["expr"], namespace) == ast.literal_eval(match["value"]), line
        checked += 1
    return checked


def locmem_leaves(table: dict[str, Any]) -> dict[str, Any]:
    """The same aliases and routers, every leaf a locmem backend (nothing leaves the test)."""
    return {alias: spec if spec.get("BACKEND") == ROUTER else {"BACKEND": LOCMEM}
            for alias, spec in table.items()}


# -- the documentation's structure ---------------------------------------------------


def test_examples_are_found() -> None:
    assert len(PYTHON) >= 20
    assert all(b.lang in LANGUAGES for b in BLOCKS), [
        f"{b}: ```{b.lang}" for b in BLOCKS if b.lang not in LANGUAGES
    ]
    for path in DOCS.rglob("*.rst"):
        if "_build" not in path.parts:
            text = path.read_text()
            for hidden_code in ("code-block", "literalinclude", "::\n\n "):
                assert hidden_code not in text, path


@pytest.mark.parametrize("substring", sorted(CLAIMS))
def test_every_claim_names_one_block(substring: str) -> None:
    """Each claim finds one block, and the test named runs it: a test of this
    module, or ``tests/<file>.py::<test>`` that looks the block up by the same text."""
    block(substring)
    where, _, test = CLAIMS[substring].rpartition("::")
    if not where:
        assert test in globals()
    else:
        source = (ROOT / where).read_text()
        assert f"def {test}(" in source
        assert substring in source or repr(substring) in source


def manage_lines() -> list[tuple[Block, list[str]]]:
    lines = []
    for b in BLOCKS:
        if b.lang == "console":
            for line in b.code.splitlines():
                if line.startswith("$ "):
                    lines.append((b, shlex.split(line[2:], comments=True)))
    return lines


def test_shell_lines_are_valid() -> None:
    """Commands shown in the docs exist: scripts, extras, and mailrouter arguments."""
    from mailrouter.management.commands.mailrouter import Command

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    parsed = 0
    for where, words in manage_lines():
        if words[0] == "bash" and words[1].startswith("scripts/"):
            assert (ROOT / words[1]).is_file(), where
        elif words[:2] == ["pip", "install"]:
            for extra in re.findall(r"\[([\w,-]+)\]", " ".join(words)):
                assert set(extra.split(",")) <= extras.keys(), where
        elif words[:3] == ["python", "manage.py", "mailrouter"]:
            Command().create_parser("manage.py", "mailrouter").parse_args(words[3:])
            parsed += 1
    assert parsed >= 10


# -- reference pages list everything in the code ------------------------------------


def anchors(page: str, prefix: str) -> set[str]:
    return set(re.findall(rf"^\({prefix}-([\w.]+)\)=$", (DOCS / page).read_text(), re.M))


def test_every_check_id_is_documented() -> None:
    in_code = set()
    for path in (ROOT / "src" / "mailrouter").rglob("*.py"):
        in_code |= set(re.findall(r"mailrouter\.([EW]\d{3})", path.read_text()))
    assert anchors("reference/checks.md", "check") == in_code


def test_every_router_option_is_documented() -> None:
    from mailrouter.config import ROUTER_OPTION_KEYS
    from mailrouter.health.settings import HEALTH_KEYS

    assert anchors("reference/options.md", "option") == set(ROUTER_OPTION_KEYS)
    page = (DOCS / "reference/options.md").read_text()
    table_keys = set(re.findall(r"^\| `(\w+)` \|", page, re.M))
    assert set(HEALTH_KEYS) <= table_keys
    # The "every option at once" example sets every option and health key.
    options = settings_of(run(block('"clock": "time.time"')))["MAILERS"]["default"]["OPTIONS"]
    assert set(options) == set(ROUTER_OPTION_KEYS)
    assert set(options["health"]) == set(HEALTH_KEYS)


def test_public_api() -> None:
    """The example runs, every export is listed on the page, and the exports are
    the very objects the router uses, not copies."""
    import mailrouter
    from mailrouter.classify import Classifier
    from mailrouter.health.breaker import State
    from mailrouter.probe import ProbeResult

    run(block("mailrouter.MailRouterError"))
    page = (DOCS / "reference/public-api.md").read_text()
    listed = set(re.findall(r"`~mailrouter\.(\w+)`", page))
    assert listed == set(mailrouter.__all__)
    assert (mailrouter.State, mailrouter.ProbeResult) == (State, ProbeResult)
    assert mailrouter.Classifier == Classifier


def test_every_matcher_is_documented() -> None:
    from mailrouter.matching import MATCHER_KEYS

    assert anchors("reference/matchers.md", "matcher") == set(MATCHER_KEYS)


def test_every_signal_is_documented() -> None:
    from django.dispatch import Signal

    from mailrouter import signals

    names = {name for name, value in vars(signals).items() if isinstance(value, Signal)}
    page = (DOCS / "reference/signals.md").read_text()
    documented = set(re.findall(r"\{py:data\}`~mailrouter\.signals\.(\w+)`", page))
    assert documented == names


def test_every_command_option_and_exit_code_is_documented() -> None:
    import argparse

    from mailrouter.management.commands import mailrouter as command

    page = (DOCS / "reference/commands.md").read_text()

    def check(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, subparser in action.choices.items():
                    assert re.search(rf"^#+ .*`{path}{name}\b", page, re.M), path + name
                    check(subparser, f"{path}{name} ")
            for option in action.option_strings if path else ():  # top level: Django's own
                if option not in ("-h", "--help"):
                    assert f"`{option}" in page, (path, option)

    check(command.Command().create_parser("manage.py", "mailrouter"), "")
    codes = {value for key, value in vars(command).items() if key.startswith("EXIT_")}
    for code in {0} | codes:
        assert f"| `{code}` |" in page


# -- examples with meaning beyond "it runs" -----------------------------------------


def claim_of(test: str) -> str:
    """The block claimed by ``test`` (which claims exactly one)."""
    [substring] = [s for s, t in CLAIMS.items() if t == test]
    return block(substring)


def test_quickstart_send() -> None:
    table = settings_of(run(block('"mailers": ["eu_smtp", "eu_backup"]')))["MAILERS"]
    with applied({"MAILERS": locmem_leaves(table)}):
        code = claim_of("test_quickstart_send")
        assert check_commented_values(code, run(code)) == 4


def explain(*args: str) -> dict[str, Any]:
    import json
    from io import StringIO

    out = StringIO()
    call_command("mailrouter", "explain", *args, "--json", stdout=out)
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def test_quickstart_legacy() -> None:
    configured = check_example(claim_of("test_quickstart_legacy"))
    assert configured["EMAIL_BACKEND"] == ROUTER
    with applied(configured):
        assert explain("--to", "x@example.com", "--from", "alerts@web-1")["route"] == "ops"
        assert explain("--to", "x@example.com")["route"] == "default"


def test_routing_example_routes() -> None:
    configured = check_example(block('"name": "alerts"'))
    with applied(configured):
        assert explain("--to", "kunde@shop.de", "--from", "app@example.com")["route"] == "eu"
        assert explain("--to", "kunde@shop.de", "--from", "alerts@web-1.example.com")[
            "route"
        ] == "alerts"
        assert explain("--to", "a@example.com", "--tag", "newsletter")["route"] == "bulk"
        reset = explain("--to", "a@example.com", "--header", "X-Mail-Kind=password-reset")
        assert reset["route"] == "resets"
        assert [c["alias"] for c in reset["candidates"]] == ["transactional", "relay"]
        assert explain("--to", "a@example.com")["route"] == "default"


def test_pinned_send() -> None:
    table = settings_of(run(block('"name": "alerts"')))["MAILERS"]
    with applied({"MAILERS": locmem_leaves(table)}):
        code = claim_of("test_pinned_send")
        assert check_commented_values(code, run(code)) == 2


@contextmanager
def vip_module() -> Iterator[None]:
    """``myproject.mail`` holding the routing guide's ``is_vip``."""
    is_vip = run(block("def is_vip("))["is_vip"]
    package, module = types.ModuleType("myproject"), types.ModuleType("myproject.mail")
    module.is_vip = is_vip  # type: ignore[attr-defined]
    package.mail = module  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "myproject", package)
        patch.setitem(sys.modules, "myproject.mail", module)
        vip, plain = types.SimpleNamespace(metadata={"plan": "vip"}), types.SimpleNamespace()
        assert is_vip(vip) is True and is_vip(plain) is False
        yield


def test_every_matcher() -> None:
    with vip_module():
        configured = check_example(block('"name": "vip"'))
        with applied(configured):
            def route(*args: str) -> str:
                return str(explain(*args)["route"])

            assert route("--to", "a@example.com", "--metadata", "plan=vip") == "vip"
            assert route("--to", "a@example.com", "--cc", "b@shop.DE") == "eu"
            assert route("--to", "a@example.com", "--from", "x@shop.example.com") == "shop"
            assert route("--to", "a@example.com", "--from", "billing@example.org") == "billing"
            assert route("--to", "a@example.com", "--tag", "newsletter") == "bulk"
            assert route("--to", "a@example.com", "--metadata", "tenant=acme") == "acme"
            assert route("--to", "a@example.com", "--header",
                         "x-mail-kind=password-reset") == "resets"
            assert route("--to", "a@example.com") == "default"


def test_health_example() -> None:
    configured = check_example(claim_of("test_health_example"))
    with applied(configured) as [router]:
        health = router.config.health_settings
        assert health.cache == "mailrouter"
        assert health.policy("smtp").failure_threshold == 2
        assert health.policy("smtp").cooldown == 10
        assert health.policy("mailgun").failure_threshold == 5


def test_routing_in_your_own_tests() -> None:
    """The keep_routing example runs as written against the quickstart's EU route."""
    import unittest
    from io import StringIO

    namespace = run(block("class InvoiceMailTests"))
    smtp = {"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "localhost"}}
    table = {"default": {"BACKEND": ROUTER, "OPTIONS": {"routes": [
                 {"name": "eu", "when": {"to_domain": ["*.de"]},
                  "mailers": ["eu_smtp", "eu_backup"]},
                 {"mailers": ["smtp"]}]}},
             "eu_smtp": smtp, "eu_backup": smtp, "smtp": smtp}
    with applied({"MAILERS": table}):
        mail.outbox = []
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(namespace["InvoiceMailTests"])
        result = unittest.TextTestRunner(stream=StringIO()).run(suite)
    assert result.testsRun == 2 and result.wasSuccessful(), result.failures + result.errors


def test_explain_example() -> None:
    table = settings_of(run(block('"mailers": ["eu_smtp", "eu_backup"]')))["MAILERS"]
    with applied({"MAILERS": locmem_leaves(table)}):
        code = claim_of("test_explain_example")
        assert check_commented_values(code, run(code)) == 3


def test_concurrency_example() -> None:
    configured = check_example(claim_of("test_concurrency_example"))
    with applied(configured) as [router]:
        assert router.config.concurrency == 16


def test_weighted_migration_example() -> None:
    from mailrouter import strategies

    routes = run(claim_of("test_weighted_migration_example"))["routes"]
    table = {"default": {"BACKEND": ROUTER, "OPTIONS": {"routes": routes}},
             **{alias: {"BACKEND": LOCMEM} for alias in ("mailgun", "postmark", "smtp")}}
    with applied({"MAILERS": table}) as [router]:
        assert [p for p in check_messages() if not p.startswith(EXPECTED_ADVICE)] == []
        result = explain("--to", "a@example.com")
        assert result["strategy"] == "weighted (mailgun 95, postmark 5, smtp 0)"
        assert result["candidates"][-1]["alias"] == "smtp"  # failover only
        strategies.RANDOM.seed(5)
        batch = [mail.EmailMessage("s", "b", "app@example.com", [f"u{i}@x.org"])
                 for i in range(1000)]
        router.send_messages(batch)
    share = sum(m.sent_using == "postmark" for m in batch) / len(batch)  # type: ignore[attr-defined]
    assert 0.03 < share < 0.07


def test_rate_limits_example() -> None:
    options = run(claim_of("test_rate_limits_example"))["router_options"]
    table = {"default": {"BACKEND": ROUTER, "OPTIONS": options},
             **{alias: {"BACKEND": LOCMEM} for alias in ("ses", "mailgun")}}
    caches = {"health": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with applied({"MAILERS": table, "CACHES": caches}) as [router]:
        batch = [mail.EmailMessage("s", "b", "app@example.com", [f"u{i}@x.org"])
                 for i in range(60)]
        assert router.send_messages(batch) == 60
    # 14 at once, then the refill: the rest overflowed to Mailgun, recorded.
    overflowed = [m for m in batch if m.sent_using == "mailgun"]  # type: ignore[attr-defined]
    assert overflowed
    reason = overflowed[0].mailrouter_attempts[0].error  # type: ignore[attr-defined]
    assert reason.startswith("rate limit 14/s reached")


def test_classifier_example() -> None:
    import smtplib

    from mailrouter import Outcome, Stage

    classify = run(block("def classify("))["classify"]
    relay_denied = smtplib.SMTPRecipientsRefused(
        {"a@example.com": (554, b"5.7.1 <a@example.com>: Relay access denied")}
    )
    assert classify(relay_denied, Stage.ENVELOPE) is Outcome.NOT_SENT
    unknown_user = smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"5.1.1 No such user")})
    assert classify(unknown_user, Stage.ENVELOPE) is Outcome.REJECTED
    assert classify(ConnectionRefusedError(111, "refused"), Stage.CONNECT) is Outcome.NOT_SENT


def smtp_leaf(server: FaultySMTPServer) -> dict[str, Any]:
    return {"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": server.port, "timeout": 5}}


def test_delivery_error_example(capsys: pytest.CaptureFixture[str]) -> None:
    with FaultySMTPServer(reject_recipients=["bob@*"]) as server:
        table = {"default": {"BACKEND": ROUTER,
                             "OPTIONS": {"routes": [{"mailers": ["smtp"]}], "health": False}},
                 "smtp": smtp_leaf(server)}
        with applied({"MAILERS": table}):
            namespace = run(block("except DeliveryError as error"))
    assert namespace["sent"] == 1
    assert capsys.readouterr().out.splitlines() == ["rejected ['rejected']"]


@pytest.mark.skipif(not HAS_MAILERS, reason="the examples use Django 6.1's MAILERS")
def test_testing_examples() -> None:
    for name in ("test_orders_fail_over_to_the_backup_relay", "test_a_read_timeout_is_not_resent"):
        run(block(f"def {name}"))[name]()


def test_clock_example() -> None:
    namespace = run(block("CLOCK.now += 30"))
    assert namespace["CLOCK"]() == 1_700_000_030.0


def test_state_changed_receiver(capsys: pytest.CaptureFixture[str]) -> None:
    """The receiver's arguments are the ones the signal sends: a breaker opens."""
    from mailrouter.signals import mailer_state_changed

    namespace = run(block("def on_state_changed("))
    try:
        with FaultySMTPServer(mode="refuse") as down, FaultySMTPServer() as up:
            table = {"default": {"BACKEND": ROUTER, "OPTIONS": {
                         "routes": [{"mailers": ["smtp", "backup"]}],
                         "health": {"failure_threshold": 1}}},
                     "smtp": smtp_leaf(down), "backup": smtp_leaf(up)}
            with applied({"MAILERS": table}) as [router]:
                router.send_messages([mail.EmailMessage("s", "b", "a@example.com",
                                                        ["b@example.com"])])
    finally:
        mailer_state_changed.disconnect(namespace["on_state_changed"])
    assert capsys.readouterr().out.startswith("smtp: closed -> open (1 consecutive failures")


def test_signal_receivers(capsys: pytest.CaptureFixture[str]) -> None:
    from mailrouter import signals

    namespace = run(block("def count_sent("))
    try:
        with FaultySMTPServer(reject_recipients=["bob@*"]) as server:
            table = {"default": {"BACKEND": ROUTER, "OPTIONS": {
                         "routes": [{"mailers": ["smtp"]}], "health": False}},
                     "smtp": smtp_leaf(server)}
            with applied({"MAILERS": table}) as [router]:
                router.fail_silently = True
                router.send_messages([
                    mail.EmailMessage("Hi Ann", "b", "a@example.com", ["ann@example.com"]),
                    mail.EmailMessage("Hi Bob", "b", "a@example.com", ["bob@example.com"]),
                ])
    finally:
        signals.message_sent.disconnect(namespace["count_sent"])
        signals.message_failed.disconnect(namespace["alert_failed"])
        signals.attempt_failed.disconnect(namespace["note_attempt"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sent via smtp after 1 attempt(s)"
    assert out[1].startswith("smtp: rejected ")
    assert out[2].startswith("rejected: 'Hi Bob' ")


def test_probe_view() -> None:
    view = run(block("def mail_ready("))["mail_ready"]
    for mode, status in (("accept", 200), ("refuse", 503)):
        with FaultySMTPServer(mode=mode) as server:
            table = {"default": {"BACKEND": ROUTER,
                                 "OPTIONS": {"routes": [{"mailers": ["smtp"]}]}},
                     "smtp": smtp_leaf(server)}
            with applied({"MAILERS": table}), as_a_user_runs_it():
                response = view(RequestFactory().get("/ready"))
        assert response.status_code == status, response.content


def test_docs_build_is_part_of_the_test_command() -> None:
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert "scripts/docs.sh" in script
    assert os.access(ROOT / "scripts" / "docs.sh", os.R_OK)


def test_leaf_kind_example() -> None:
    """The registered kind handles the example's backend, judges its library's
    error and bounds its timeout; it is unregistered afterwards."""
    from mailrouter import Outcome, Stage, leafkinds

    namespace = run(block("class PigeonKind("))
    kind = namespace["PIGEON"]
    try:
        backend = namespace["PigeonBackend"]()
        assert leafkinds.kind_for(backend) is kind
        full = namespace["PigeonFull"]()
        assert leafkinds.error_outcome(full, Stage.UNKNOWN) is Outcome.NOT_SENT
        kind.bound_timeout(backend, None, 9)
        assert kind.timeout(backend) == 9
    finally:
        leafkinds.unregister(kind)
    assert leafkinds.kind_for(namespace["PigeonBackend"]()) is leafkinds.GENERIC
