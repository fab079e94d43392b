"""``python -m mailrouter.testing smtp|esp|statuspage``: the real module in a
subprocess, the router sending through it, the mode changed while it runs
through stdin and through its control URL (which answers in every mode,
``refuse`` included)."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.core.management import call_command

from mailrouter.testing import FaultySMTPServer
from mailrouter.testing.settings import router_settings

from .conftest import make_router
from .messages import kinds, msg
from .processes import child_env

SMTP = "django.core.mail.backends.smtp.EmailBackend"


def smtp_leaf(server: FaultySMTPServer) -> dict[str, Any]:
    return {"BACKEND": SMTP, "OPTIONS": {"host": "127.0.0.1", "port": server.port, "timeout": 5}}


@dataclass
class Command:
    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    port: int
    control: str
    settings: dict[str, Any] | None

    def expect(self, pattern: str, timeout: float = 10) -> str:
        """The next output line matching ``pattern`` (earlier ones are skipped)."""
        while True:
            line = self.lines.get(timeout=timeout)
            if re.search(pattern, line):
                return line

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def post(self, query: str) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.control}?{query}", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=5) as answer:
            document: dict[str, Any] = json.loads(answer.read())
        return document


@contextmanager
def command(*args: str) -> Iterator[Command]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mailrouter.testing", *args, "--port", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=child_env(),
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    try:
        head = [lines.get(timeout=20) for _ in range(4)]
        port = int(re.findall(r"listening on [\d.]+:(\d+)", head[0])[0])
        settings = json.loads(head[1].removeprefix("settings: ")) if "{\"BACKEND" in head[1] \
            else None  # fmt: skip
        control = re.findall(r"'(http://[^?']+)\?", head[3])[0]
        yield Command(process, lines, port, control, settings)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


def send() -> EmailMessage:
    message = msg("by hand")
    router = make_router()
    router.fail_silently = True
    router.send_messages([message])
    return message


def test_smtp_command_fails_over_and_changes_mode_while_running() -> None:
    with command("smtp", "--mode", "refuse") as relay, FaultySMTPServer() as backup:
        assert relay.settings == {"BACKEND": SMTP, "OPTIONS": {
            "host": "127.0.0.1", "port": relay.port, "timeout": 5}}
        leaves = {"relay": relay.settings,
                  "backup": smtp_leaf(backup)}
        options = {"routes": [{"mailers": ["relay", "backup"]}], "health": False}
        with router_settings(leaves, options):
            assert kinds(send()) == [("relay", "not_sent"), ("backup", "accepted")]
            relay.type("accept")
            relay.expect(r"^mode: accept$")
            message = send()
            assert kinds(message) == [("relay", "accepted")]
            assert message.mailrouter_message_id in relay.expect(r"^received: ")
            assert relay.post("to=reject_rcpt") == {"mode": "reject_rcpt"}
            assert kinds(send()) == [("relay", "rejected")]
            relay.type("mode no_such_mode")
            assert "unknown mode 'no_such_mode'" in relay.expect("unknown")


def test_esp_command_answers_503_then_recovers_from_the_control_url() -> None:
    with command("esp", "mailgun", "--mode", "503") as esp, FaultySMTPServer() as backup:
        assert esp.settings is not None
        leaves = {"mailgun": esp.settings,
                  "backup": smtp_leaf(backup)}
        options = {"routes": [{"mailers": ["mailgun", "backup"]}], "health": False}
        with router_settings(leaves, options):
            assert kinds(send()) == [("mailgun", "not_sent"), ("backup", "accepted")]
            esp.type("refuse")
            esp.expect(r"^mode: refuse$")
            assert kinds(send()) == [("mailgun", "not_sent"), ("backup", "accepted")]
            # Nothing listens on the ESP's port now; the control URL still answers.
            assert esp.post("mode=ok") == {"mode": "ok"}
            assert kinds(send()) == [("mailgun", "accepted")]
    assert len(backup.messages) == 2


@pytest.mark.parametrize("kind", ["statuspage", "postmark"])
def test_statuspage_command_takes_a_mailer_out_and_puts_it_back(kind: str) -> None:
    down, up = ("major_outage" if kind == "statuspage" else "outage"), "operational"
    with command("statuspage", "--kind", kind, "--state", down) as page:
        path = "/api/v2/summary.json" if kind == "statuspage" else ""
        url = f"http://127.0.0.1:{page.port}{path}"
        leaves = {"a": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
                  "b": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
        options = {"routes": [{"mailers": ["a", "b"]}],
                   "status_pages": {"a": {"url": url, "kind": kind, "allow_http": True}}}
        with router_settings(leaves, options):
            call_command("mailrouter", "refresh-status", stdout=StringIO())
            assert kinds(send()) == [("a", "skipped"), ("b", "accepted")]
            assert page.post(f"to={up}") == {"state": up}
            call_command("mailrouter", "refresh-status", stdout=StringIO())
            assert kinds(send()) == [("a", "accepted")]


def test_every_option_of_the_command_is_documented() -> None:
    import argparse

    from mailrouter.testing.command import build_parser

    from .processes import ROOT

    page = (ROOT / "docs/reference/commands.md").read_text()
    section = page[page.index("## `python -m mailrouter.testing`"):]
    [subparsers] = [a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction)]  # fmt: skip
    for name, parser in subparsers.choices.items():
        assert f"python -m mailrouter.testing {name} " in section, name
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in section, (name, option)
