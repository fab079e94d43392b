"""Log records name their source once: the logger's name says ``mailrouter`` (or
``mailrouter.outbox``); the message itself carries no such prefix, so a format
with ``%(name)s`` never doubles it (docs/reference/signals.md, "Logging").

Records come from real parts: a status page served by a local HTTP server
changing state, and an outbox row delivered to a real local SMTP server.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.core import mail

from mailrouter.backend import RouterBackend
from mailrouter.health.store import store_for
from mailrouter.outbox.worker import drain
from mailrouter.status_pages import refresh
from mailrouter.status_pages.refresh import refresh_now
from mailrouter.testing import FaultySMTPServer

from .outbox_fixtures import outbox_settings
from .smtp_fixtures import smtp_mailer
from .status_server import SUMMARY, StatusPageServer, statuspage

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "mailrouter"
SIGNALS_PAGE = (ROOT / "docs" / "reference" / "signals.md").read_text()
FORMAT = "%(name)s: %(message)s"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


class Lines(logging.Handler):
    """Every record of the ``mailrouter`` loggers, formatted as a project would."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines() -> Iterator[list[str]]:
    handler, logger = Lines(), logging.getLogger("mailrouter")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_status_page_change_is_logged_with_one_prefix(
    lines: list[str], configure: Callable[..., RouterBackend],
) -> None:
    refresh.refresher.forget()
    with StatusPageServer() as server:
        server.pages[SUMMARY] = statuspage({"API": "operational"})
        mailers = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
                   for alias in ("mailgun", "smtp")}
        page = {"url": server.url(SUMMARY), "components": ["API"], "allow_http": True,
                "timeout": 1, "refresh": 60}
        router = configure(mailers, {"routes": [{"mailers": ["mailgun", "smtp"]}],
                                     "status_pages": {"mailgun": page}})
        config = router.config
        for state in ("operational", "major_outage"):
            server.pages[SUMMARY] = statuspage({"API": state})
            refresh_now(dict(config.status_pages), store_for(config.health_settings),
                        config.health_settings.clock)
    down = ("mailrouter: mailer mailgun status page operational → down: API: major_outage; "
            "skipped like an open circuit")
    assert [line for line in lines if "status page" in line] == [
        "mailrouter: mailer mailgun status page unknown → operational: API: operational; "
        "no effect",
        down,
    ]
    assert f"\n{down}\n" in SIGNALS_PAGE  # the reference shows the real line


@pytest.mark.django_db
def test_an_outbox_delivery_is_logged_with_one_prefix(
    lines: list[str], smtp_server: Callable[..., FaultySMTPServer],
) -> None:
    relay = smtp_server()
    with outbox_settings({"relay": smtp_mailer(relay)},
                         {"routes": [{"mailers": ["relay"]}], "health": False}):
        mail.send_mail("Hello", "body", "app@example.com", ["user@example.com"])
        drain(once=True)
    [line] = [line for line in lines if line.startswith("mailrouter.outbox")]
    assert line.startswith("mailrouter.outbox: row ")
    assert line.endswith(" sent (delivery 1, via relay)")


def logged_texts(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """The literal message of every ``logger.<level>(...)`` / ``logger.log(level, ...)``."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "logger"):
            continue
        position = {"log": 1, **dict.fromkeys(LEVELS, 0)}.get(node.func.attr)
        if position is None or len(node.args) <= position:
            continue
        text = node.args[position]
        if isinstance(text, ast.Constant) and isinstance(text.value, str):
            yield node.lineno, text.value


def test_no_log_message_repeats_the_loggers_name() -> None:
    found = {}
    for path in SRC.rglob("*.py"):
        for line, text in logged_texts(ast.parse(path.read_text())):
            found[f"{path.relative_to(SRC)}:{line}"] = text
    assert len(found) >= 20
    assert {where: text for where, text in found.items()
            if text.lower().startswith("mailrouter")} == {}
