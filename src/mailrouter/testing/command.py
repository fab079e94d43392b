"""``python -m mailrouter.testing``: the fault servers as a command, to
rehearse failover by hand against ``runserver``.

::

    python -m mailrouter.testing smtp --port 2525 --mode refuse
    python -m mailrouter.testing esp mailgun --port 8025 --mode 503
    python -m mailrouter.testing statuspage --port 8030 --state major_outage

Each runs one server of this package (:class:`~mailrouter.testing.FaultySMTPServer`,
:class:`~mailrouter.testing.FakeESPServer`,
:class:`~mailrouter.testing.statuspage.StatusPageServer`) in the foreground,
prints the mailer settings that reach it, and one line per message received.
The mode (or status page state) changes while it runs: type it and Enter,
or ``POST`` it to the control URL printed at startup. The control URL has a
port of its own, so it answers in every mode, ``refuse`` included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..status_pages.settings import KINDS
from .esp import ESPFault, FakeESPServer
from .smtp import FaultySMTPServer, SMTPFault
from .statuspage import SUMMARY, StatusPageServer, sorry, statuspage

ESP_NAMES = ("mailgun", "postmark", "ses")
#: Statuspage's page indicator for a component state (what its summary shows).
INDICATORS = {
    "operational": "none",
    "degraded_performance": "minor",
    "partial_outage": "minor",
    "under_maintenance": "maintenance",
    "major_outage": "major",
}
#: The kinds it serves: a Statuspage summary, or Postmark's current (Sorry) API at the root.
STATUS_KINDS = {"statuspage": SUMMARY, "postmark": ""}


@dataclass
class Running:
    """One started server, as the command drives it."""

    title: str
    address: str
    #: "mode" (fault servers) or "state" (status pages).
    setting: str
    choices: tuple[str, ...]
    current: Callable[[], str]
    #: Set the mode from what a user typed; ValueError names the choices.
    change: Callable[[str], str]
    stop: Callable[[], None]
    received: Callable[[], list[str]] = lambda: []
    settings_hint: list[str] = field(default_factory=list)


def _choose(text: str, choices: Sequence[str], setting: str) -> str:
    if text in choices:
        return text
    raise ValueError(f"unknown {setting} {text!r} (choose from: {', '.join(choices)})")


def esp_mode(text: str) -> ESPFault:
    """An :class:`ESPFault` by value, or by HTTP status alone (``503``)."""
    modes = [fault.value for fault in ESPFault]
    if text.isdigit():
        matches = [mode for mode in modes if mode.endswith(f"_{text}")]
        if len(matches) == 1:
            return ESPFault(matches[0])
    return ESPFault(_choose(text, modes, "mode"))


def run_smtp(args: argparse.Namespace) -> Running:
    mode = SMTPFault(_choose(args.mode, [f.value for f in SMTPFault], "mode"))
    server = FaultySMTPServer(
        args.host, args.port, mode=mode, username=args.username, password=args.password
    ).start()
    options: dict[str, Any] = {"host": server.host, "port": server.port, "timeout": 5}
    if args.username:
        options.update(username=args.username, password="<the --password you gave>")

    def change(text: str) -> str:
        server.mode = SMTPFault(_choose(text, [f.value for f in SMTPFault], "mode"))
        return server.mode.value

    return Running(
        "smtp", f"{server.host}:{server.port}", "mode", tuple(f.value for f in SMTPFault),
        lambda: server.mode.value, change, server.stop,
        lambda: [f"{m.mail_from} -> {', '.join(m.rcpt_tos)} {m.message_id or ''}".rstrip()
                 for m in server.messages],
        [json.dumps({"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                     "OPTIONS": options})],
    )  # fmt: skip


def run_esp(args: argparse.Namespace) -> Running:
    server = FakeESPServer(
        args.host, args.port, api_key=args.api_key, mode=esp_mode(args.mode)
    ).start()
    key = args.api_key or "any-key"
    leaf: dict[str, Any] = {
        "mailgun": {"BACKEND": "anymail.backends.mailgun.EmailBackend",
                    "OPTIONS": {"api_key": key, "sender_domain": "mg.example.com",
                                "api_url": server.mailgun_api_url}},
        "postmark": {"BACKEND": "anymail.backends.postmark.EmailBackend",
                     "OPTIONS": {"server_token": key, "api_url": server.postmark_api_url}},
        "ses": {"BACKEND": "anymail.backends.amazon_ses.EmailBackend",
                "OPTIONS": {"client_params": {
                    "endpoint_url": server.ses_endpoint_url, "region_name": "us-east-1",
                    "aws_access_key_id": "test", "aws_secret_access_key": key}}},
    }[args.esp]  # fmt: skip

    def change(text: str) -> str:
        server.mode = esp_mode(text)
        return server.mode.value

    return Running(
        f"esp {args.esp}", f"{server.host}:{server.port}", "mode",
        tuple(f.value for f in ESPFault), lambda: server.mode.value, change, server.stop,
        lambda: [f"{m.from_email} -> {', '.join(m.to)} {m.message_id or ''}".rstrip()
                 for m in server.messages],
        [json.dumps(leaf)],
    )  # fmt: skip


def run_statuspage(args: argparse.Namespace) -> Running:
    source = KINDS[args.kind]
    states = tuple(source.statuses)
    server = StatusPageServer(host=args.host, port=args.port).start()
    path = STATUS_KINDS[args.kind]
    components = args.component or ["Email Sending"]
    current = [""]

    def change(text: str) -> str:
        state = _choose(text, states, "state")
        parts = dict.fromkeys(components, state)
        if args.kind == "statuspage":
            server.pages[path] = statuspage(parts, INDICATORS.get(state, "none"))
        else:
            server.pages.update(sorry(parts, state=state))
        current[0] = state
        return state

    change(args.state)
    url = server.url(path, args.host)
    hint = {"kind": args.kind, "url": url, "allow_http": True, "refresh": 10}
    return Running(
        f"statuspage ({args.kind})", f"{args.host}:{server.port}", "state", states,
        lambda: current[0], change, server.stop,
        settings_hint=[f'"status_pages": {{"<mailer alias>": {json.dumps(hint)}}}'],
    )  # fmt: skip


class _Control(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], running: Running, say: Callable[[str], None]):
        self.running = running
        self.say = say
        super().__init__(address, _ControlHandler)


class _ControlHandler(BaseHTTPRequestHandler):
    server: _Control

    def do_GET(self) -> None:
        running = self.server.running
        self._answer(200, {running.setting: running.current(),
                           "received": len(running.received())})  # fmt: skip

    def do_POST(self) -> None:
        running = self.server.running
        query = parse_qs(urlsplit(self.path).query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace").strip() if length else ""
        form = parse_qs(body)
        wanted = next(
            (values[0] for source in (query, form) for name, values in source.items()
             if name in ("to", running.setting)),
            body if body and "=" not in body else None,
        )  # fmt: skip
        if not wanted:
            self._answer(400, {"error": f"give the new {running.setting}: ?to=<{running.setting}>"})
            return
        try:
            now = running.change(wanted)
        except ValueError as error:
            self._answer(400, {"error": str(error)})
            return
        self.server.say(f"{running.setting}: {now} (control URL)")
        self._answer(200, {running.setting: now})

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _read_stdin(running: Running, say: Callable[[str], None], done: threading.Event) -> None:
    """Each line: a new mode (``mode <m>`` / ``state <s>`` / ``<m>``), or ``quit``."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] in ("quit", "exit"):
            done.set()
            return
        text = words[-1]
        try:
            say(f"{running.setting}: {running.change(text)}")
        except ValueError as error:
            say(str(error))
    # End of input (started without a terminal): keep serving.


def _report_received(running: Running, say: Callable[[str], None], done: threading.Event) -> None:
    shown = 0
    while not done.wait(0.2):
        received = running.received()
        for line in received[shown:]:
            say(f"received: {line}")
        shown = len(received)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mailrouter.testing",
        description="Run a fault-injecting SMTP server, fake ESP API or status page "
        "in the foreground, to rehearse failover by hand.",
    )
    kinds = parser.add_subparsers(dest="server", required=True, metavar="SERVER")

    def common(sub: argparse.ArgumentParser, port: int) -> None:
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=port, help=f"(default {port}; 0: any free)")
        sub.add_argument("--control-port", type=int, default=0,
                         help="port of the control URL (default: any free port)")

    smtp = kinds.add_parser("smtp", help="an SMTP server with fault modes")
    common(smtp, 2525)
    smtp.add_argument("--mode", default="accept", help="accept, refuse, tempfail_rcpt, ...")
    smtp.add_argument("--username")
    smtp.add_argument("--password")
    esp = kinds.add_parser("esp", help="a fake ESP HTTP API with fault modes")
    esp.add_argument("esp", choices=ESP_NAMES)
    common(esp, 8025)
    esp.add_argument("--mode", default="ok", help="ok, refuse, 503, 429, 401, read_timeout, ...")
    esp.add_argument("--api-key", help="the key requests must carry (default: any)")
    page = kinds.add_parser("statuspage", help="an ESP status page")
    common(page, 8030)
    page.add_argument("--kind", choices=list(STATUS_KINDS), default="statuspage")
    page.add_argument("--state", default="operational",
                      help="statuspage: operational, degraded_performance, partial_outage, "
                      "under_maintenance, major_outage; postmark: UP, DELAY, DEGRADED, DOWN, ...")
    page.add_argument("--component", action="append",
                      help="a component on the page (repeatable; default 'Email Sending')")
    return parser


STARTERS: dict[str, Callable[[argparse.Namespace], Running]] = {
    "smtp": run_smtp, "esp": run_esp, "statuspage": run_statuspage,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        running = STARTERS[args.server](args)
    except ValueError as error:
        parser.error(str(error))
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            print(text, flush=True)

    control = _Control((args.host, args.control_port), running, say)
    control_url = f"http://{args.host}:{control.server_address[1]}/"
    done = threading.Event()
    say(f"{running.title}: listening on {running.address} ({running.setting}: "
        f"{running.current()})")  # fmt: skip
    for hint in running.settings_hint:
        say(f"settings: {hint}")
    say(f"{running.setting}s: {', '.join(running.choices)}")
    say(f"control: type a {running.setting} and Enter, or "
        f"curl -X POST '{control_url}?to=<{running.setting}>'; Ctrl-C stops")  # fmt: skip
    threads = [
        threading.Thread(target=control.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True),
        threading.Thread(target=_read_stdin, args=(running, say, done), daemon=True),
        threading.Thread(target=_report_received, args=(running, say, done), daemon=True),
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop cleanly
        done.wait()
    done.set()
    control.shutdown()
    control.server_close()
    running.stop()
    say("stopped")
    return 0
