#!/usr/bin/env python
"""How much does routing through ``RouterBackend`` cost, compared with using
the same leaf backend directly?

Each figure compares arms measured side by side in one run, interleaved round
by round (order rotating), so machine noise hits every arm alike:

1. Per-message overhead on Django's dummy backend (which does nothing): the
   router's whole per-message cost (route selection over a realistic route
   table, Message-ID, snapshot, attempt record, health bookkeeping, signals)
   versus calling the dummy backend directly, in batches of 100 messages per
   ``send_messages()``. Target: median added cost <= 20 µs per message.
   Also shown, without a target: the router with health tracking off, and
   ``send_mail()``-style use (a new backend per message, one message per call),
   where per-call costs are not amortized over a batch.
2. Throughput to a local SMTP server (``FaultySMTPServer`` in accept mode, run
   in a child process so it does not share the GIL with the client): Django's
   SMTP backend used directly versus the same leaf through the router, one
   connection per batch reused for every message of the batch.
   Target: router/direct messages per second >= 0.95.

Usage (no Django project needed; Django is configured here)::

    pip install -e .
    python benchmarks/overhead.py            # full run (well under a minute)
    python benchmarks/overhead.py --quick    # a few seconds
    python benchmarks/overhead.py --json     # figures as JSON on stdout

On Django 6.1+ the router is configured with ``MAILERS``; on Django 5.2/6.0
(or with ``--style legacy``) with ``EMAIL_BACKEND`` + ``MAILROUTER``.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

ROUTER = "mailrouter.backend.RouterBackend"
DUMMY = "django.core.mail.backends.dummy.EmailBackend"
SMTP = "django.core.mail.backends.smtp.EmailBackend"
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"

TARGET_ADDED_US = 20.0
TARGET_SMTP_RATIO = 0.95

#: A realistic route table: the to_domain rule is evaluated for every message,
#: and the messages that are not EU-bound fall through every rule to the
#: catch-all, so route selection is measured at its most expensive.
ROUTES: list[dict[str, Any]] = [
    {
        "name": "eu",
        "when": {"to_domain": ["*.de", "*.fr", "*.eu", "eu.example.com"]},
        "mailers": ["leaf", "backup"],
    },
    {"name": "bulk", "when": {"tags": ["newsletter", "digest"]}, "mailers": ["leaf"]},
    {"name": "ops", "when": {"from_email": ["root@*", "errors@*"]}, "mailers": ["leaf"]},
    {"name": "default", "mailers": ["leaf", "backup"]},
]

BODY = (
    "Hello {name},\n\n"
    "Thank you for your order #{order}. It has been packed and handed to the carrier;\n"
    "you can follow the parcel with the tracking number below. Delivery usually takes\n"
    "two to three working days.\n\n"
    "    Tracking number: 00340434{order:08d}\n"
    "    Items: 3    Total: 84.90 EUR\n\n"
    "If anything is wrong with your order, simply reply to this message.\n\n"
    "Kind regards,\n"
    "The Example Shop team\n"
)


# -- the SMTP server, in a child process ----------------------------------------------


def _serve(conn: Connection) -> None:
    """Child process: run a FaultySMTPServer (accept mode) and obey commands."""
    from mailrouter.testing.smtp import FaultySMTPServer

    with FaultySMTPServer(mode="accept") as server:
        conn.send(server.port)
        while True:
            command = conn.recv()
            if command == "count":
                conn.send(len(server.messages))
            else:
                break


class ServerProcess:
    """A FaultySMTPServer in a child process (or a thread, with ``in_process``)."""

    def __init__(self, in_process: bool = False) -> None:
        self._server: Any = None
        self._process: Any = None
        if in_process:
            from mailrouter.testing.smtp import FaultySMTPServer

            self._server = FaultySMTPServer(mode="accept").start()
            self.port: int = self._server.port
            return
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        deadline = time.monotonic() + 30
        while not self._conn.poll(0.1):
            if not self._process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the SMTP server process did not start")
        self.port = self._conn.recv()

    def count(self) -> int:
        if self._server is not None:
            return len(self._server.messages)
        self._conn.send("count")
        return int(self._conn.recv())

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            return
        self._conn.send("stop")
        self._process.join(10)


# -- Django configuration -------------------------------------------------------------


def configure_django(style: str) -> str:
    import django
    from django.conf import settings

    from mailrouter.testing.settings import resolve_style

    try:
        style = resolve_style(style)
    except ValueError as error:
        raise SystemExit(f"--style {style}: {error}") from None
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-only",
        USE_TZ=True,
        INSTALLED_APPS=["mailrouter"],
        DEFAULT_FROM_EMAIL="Example Shop <orders@shop.example.com>",
        LOGGING_CONFIG=None,
    )
    django.setup()
    return style


def router_options(*, health: bool = True) -> dict[str, Any]:
    options: dict[str, Any] = {"routes": ROUTES}
    if not health:
        options["health"] = False
    return options


def leaf_table(leaf_backend: str, leaf_options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "leaf": {"BACKEND": leaf_backend, "OPTIONS": dict(leaf_options)},
        "backup": {"BACKEND": LOCMEM, "OPTIONS": {}},
    }


@contextmanager
def mail_settings(style: str, leaves: dict[str, Any]) -> Iterator[None]:
    """Configure the router as a user would, in the chosen settings style; with
    MAILERS, a second router with health tracking off is one more mailer."""
    from mailrouter.testing.settings import router_settings

    mailers = dict(leaves)
    if style == "mailers":
        mailers["no_health"] = {"BACKEND": ROUTER, "OPTIONS": router_options(health=False)}
    with router_settings(mailers, router_options(), style=style):
        yield


def backend_factories(style: str, leaves: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """How Django creates each backend: the router (default options), the
    router with health tracking off, and the leaf on its own."""
    from django.core import mail

    if style == "mailers":
        mailers = mail.mailers  # type: ignore[attr-defined]
        return {
            "router": lambda: mailers["default"],
            "no_health": lambda: mailers["no_health"],
            "direct": lambda: mailers["leaf"],
        }
    spec = leaves["leaf"]
    return {
        "router": lambda: mail.get_connection(),
        "no_health": lambda: mail.get_connection(ROUTER, **router_options(health=False)),
        "direct": lambda: mail.get_connection(spec["BACKEND"], **spec["OPTIONS"]),
    }


def make_backends(style: str, leaves: dict[str, Any]) -> dict[str, Any]:
    from mailrouter.backend import RouterBackend

    backends = {name: make() for name, make in backend_factories(style, leaves).items()}
    assert isinstance(backends["router"], RouterBackend), backends["router"]
    assert isinstance(backends["no_health"], RouterBackend), backends["no_health"]
    return backends


# -- messages ---------------------------------------------------------------------------


def make_messages(count: int, start: int = 0) -> list[Any]:
    """Fresh, realistic messages: one in four to an EU domain, the rest not."""
    from django.core.mail import EmailMessage

    messages = []
    for i in range(start, start + count):
        if i % 4 == 0:
            to = f"Kunde {i} <kunde{i}@beispiel.de>"
        else:
            to = f"Customer {i} <customer{i}@example.org>"
        messages.append(
            EmailMessage(
                f"Your order #{i} has shipped",
                BODY.format(name=f"customer {i}", order=i),
                "Example Shop <orders@shop.example.com>",
                [to],
                reply_to=["support@shop.example.com"],
            )
        )
    return messages


# -- measurement ----------------------------------------------------------------------


def timed_send(backend: Any, messages: list[Any]) -> float:
    """Seconds taken by one ``send_messages()`` call."""
    started = time.perf_counter()
    sent = backend.send_messages(messages)
    elapsed = time.perf_counter() - started
    if sent != len(messages):
        raise RuntimeError(f"{type(backend).__name__} sent {sent} of {len(messages)} messages")
    return elapsed


def interleave(
    rounds: int, warmup: int, arms: dict[str, Callable[[int], float]]
) -> dict[str, list[float]]:
    """Run each arm once per round, rotating the order; drop warm-up rounds."""
    names = list(arms)
    results: dict[str, list[float]] = {name: [] for name in names}
    # Everything that exists now lives until the end: keep it out of the
    # collector's way, so collections during a sample cost what the sample
    # itself allocated (as they would in a long-running process).
    gc.collect()
    gc.freeze()
    for r in range(warmup + rounds):
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        if (r // len(names)) % 2:
            order.reverse()
        for name in order:
            value = arms[name](r)
            if r >= warmup:
                results[name].append(value)
    return results


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def bench_dummy(style: str, rounds: int, batch: int) -> dict[str, Any]:
    leaves = leaf_table(DUMMY, {})
    with mail_settings(style, leaves):
        backends = make_backends(style, leaves)

        # Sanity: every message goes through the leaf, on the expected route.
        for name in ("router", "no_health"):
            check = make_messages(8)
            backends[name].send_messages(check)
            assert all(m.sent_using == "leaf" for m in check), [m.sent_using for m in check]
            assert [m.mailrouter_route for m in check[:2]] == ["eu", "default"]

        def arm(backend: Any) -> Callable[[int], float]:
            def run(r: int) -> float:
                messages = make_messages(batch, r * batch)
                return timed_send(backend, messages) / batch * 1e6

            return run

        samples = interleave(
            rounds, max(3, rounds // 10), {name: arm(b) for name, b in backends.items()}
        )

        # Reference only (not interleaved): what every real backend pays to
        # serialize a message, to put the router's cost in proportion.
        messages = make_messages(50)
        started = time.perf_counter()
        for message in messages:
            message.message().as_bytes()
        render_us = (time.perf_counter() - started) / len(messages) * 1e6
    added = [r - d for r, d in zip(samples["router"], samples["direct"], strict=True)]
    added_no_health = [r - d for r, d in zip(samples["no_health"], samples["direct"], strict=True)]
    router_us = statistics.median(samples["router"])
    direct_us = statistics.median(samples["direct"])
    q1, added_us, q3 = quartiles(added)
    return {
        "rounds": rounds,
        "batch": batch,
        "router_us_per_message": router_us,
        "direct_us_per_message": direct_us,
        "ratio_router_direct": router_us / direct_us if direct_us else None,
        "added_us_per_message": added_us,
        "added_us_p25": q1,
        "added_us_p75": q3,
        "added_us_per_message_health_off": statistics.median(added_no_health),
        "render_us_per_message": render_us,
        "target_added_us": TARGET_ADDED_US,
        "pass": added_us <= TARGET_ADDED_US,
    }


def bench_single(style: str, rounds: int, per_round: int) -> dict[str, Any]:
    """``send_mail()``-style use: a new backend for every message, one message
    per ``send_messages()`` call, so per-call costs are not amortized."""
    leaves = leaf_table(DUMMY, {})
    with mail_settings(style, leaves):
        factories = backend_factories(style, leaves)

        def arm(make: Callable[[], Any]) -> Callable[[int], float]:
            def run(r: int) -> float:
                messages = make_messages(per_round, r * per_round)
                started = time.perf_counter()
                for message in messages:
                    if make().send_messages([message]) != 1:
                        raise RuntimeError("a message was not sent")
                return (time.perf_counter() - started) / per_round * 1e6

            return run

        samples = interleave(
            rounds, max(3, rounds // 10), {name: arm(make) for name, make in factories.items()}
        )
    direct = samples["direct"]
    return {
        "rounds": rounds,
        "messages_per_round": per_round,
        "router_us_per_message": statistics.median(samples["router"]),
        "direct_us_per_message": statistics.median(direct),
        "added_us_per_message": statistics.median(
            [r - d for r, d in zip(samples["router"], direct, strict=True)]
        ),
        "added_us_per_message_health_off": statistics.median(
            [r - d for r, d in zip(samples["no_health"], direct, strict=True)]
        ),
    }


def bench_smtp(style: str, rounds: int, batch: int, in_process: bool) -> dict[str, Any]:
    server = ServerProcess(in_process)
    try:
        leaves = leaf_table(SMTP, {"host": "127.0.0.1", "port": server.port, "timeout": 10})
        with mail_settings(style, leaves):
            backends = make_backends(style, leaves)
            expected = 0

            def arm(backend: Any) -> Callable[[int], float]:
                def run(r: int) -> float:
                    nonlocal expected
                    messages = make_messages(batch, r * batch)
                    # Both arms: one connection per batch, reused for every message
                    # (the leaf opens and closes it itself; the router opens it on
                    # first use and closes it at the end of send_messages()).
                    elapsed = timed_send(backend, messages)
                    expected += batch
                    return batch / elapsed

                return run

            arms = {"router": arm(backends["router"]), "direct": arm(backends["direct"])}
            samples = interleave(rounds, max(2, rounds // 10), arms)
            received = server.count()
            if received != expected:
                raise RuntimeError(f"the server received {received} of {expected} messages")
    finally:
        server.stop()
    ratios = [r / d for r, d in zip(samples["router"], samples["direct"], strict=True)]
    q1, ratio, q3 = quartiles(ratios)
    return {
        "rounds": rounds,
        "batch": batch,
        "server": "thread" if in_process else "child process",
        "router_msgs_per_s": statistics.median(samples["router"]),
        "direct_msgs_per_s": statistics.median(samples["direct"]),
        "ratio_router_direct": ratio,
        "ratio_p25": q1,
        "ratio_p75": q3,
        "target_ratio": TARGET_SMTP_RATIO,
        "pass": ratio >= TARGET_SMTP_RATIO,
    }


# -- output ---------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def row(label: str, value: str, note: str = "") -> None:
    print(f"   {label:<44}{value:>12}  {note}".rstrip())


def print_table(result: dict[str, Any]) -> None:
    env, d, s = result["environment"], result["dummy"], result["smtp"]
    print(
        f"django-mailrouter {env['mailrouter']} overhead: Python {env['python']}, "
        f"Django {env['django']}, settings style {env['style']}, {env['cpus']} CPU(s)"
    )
    print()
    print(
        f"1. Per-message cost, leaf = dummy backend ({d['rounds']} rounds x {d['batch']} messages)"
    )
    row("router (default options)", f"{d['router_us_per_message']:.2f} µs")
    row("dummy backend directly", f"{d['direct_us_per_message']:.2f} µs")
    ratio = d["ratio_router_direct"]
    row("ratio router/direct", f"{ratio:.0f}x" if ratio else "n/a")
    row(
        "added by the router (median of rounds)",
        f"{d['added_us_per_message']:.2f} µs",
        f"target <= {d['target_added_us']:.0f} µs  {verdict(d['pass'])}"
        f"   (IQR {d['added_us_p25']:.2f}-{d['added_us_p75']:.2f})",
    )
    row(
        "  of which health tracking (vs health off)",
        f"{d['added_us_per_message'] - d['added_us_per_message_health_off']:.2f} µs",
    )
    row(
        "reference: message.message().as_bytes()",
        f"{d['render_us_per_message']:.0f} µs",
        "(what any real backend pays per message)",
    )
    o = result["single"]
    print()
    print(
        f"   send_mail() style: new backend per message, 1 message per call "
        f"({o['rounds']} rounds x {o['messages_per_round']}; no target)"
    )
    row("router (default options)", f"{o['router_us_per_message']:.2f} µs")
    row("dummy backend directly", f"{o['direct_us_per_message']:.2f} µs")
    row("added by the router (median of rounds)", f"{o['added_us_per_message']:.2f} µs")
    row(
        "  of which health tracking (vs health off)",
        f"{o['added_us_per_message'] - o['added_us_per_message_health_off']:.2f} µs",
    )
    print()
    print(
        f"2. Throughput, leaf = SMTP to a local FaultySMTPServer ({s['rounds']} rounds x "
        f"{s['batch']} messages, one connection per batch, server in a {s['server']})"
    )
    row("router (default options)", f"{s['router_msgs_per_s']:.0f} msg/s")
    row("SMTP backend directly", f"{s['direct_msgs_per_s']:.0f} msg/s")
    row(
        "ratio router/direct (median of rounds)",
        f"{s['ratio_router_direct']:.3f}",
        f"target >= {s['target_ratio']:.2f}  {verdict(s['pass'])}"
        f"   (IQR {s['ratio_p25']:.3f}-{s['ratio_p75']:.3f})",
    )
    print()
    print(f"({result['elapsed_s']:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Router overhead vs the same leaf backend used directly."
    )
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--style",
        choices=["auto", "mailers", "legacy"],
        default="auto",
        help="settings style: MAILERS (Django 6.1+) or EMAIL_BACKEND + MAILROUTER",
    )
    parser.add_argument(
        "--server-thread",
        action="store_true",
        help="run the SMTP server in a thread of this process instead of a child process",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if a target is missed"
    )
    parser.add_argument("--dummy-rounds", type=int, help="rounds of part 1 (default 300)")
    parser.add_argument("--smtp-rounds", type=int, help="rounds of part 2 (default 60)")
    args = parser.parse_args(argv)

    # The legacy settings style is deprecated on Django 6.1; that is fine here.
    warnings.filterwarnings("ignore", message=r".*(EMAIL_BACKEND|get_connection).*deprecated")
    started = time.perf_counter()
    style = configure_django(args.style)
    import django

    import mailrouter

    dummy_rounds = args.dummy_rounds or (40 if args.quick else 300)
    single_rounds = 20 if args.quick else 100
    smtp_rounds = args.smtp_rounds or (10 if args.quick else 60)
    result: dict[str, Any] = {
        "environment": {
            "mailrouter": mailrouter.__version__,
            "python": platform.python_version(),
            "django": django.get_version(),
            "style": style,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "dummy": bench_dummy(style, dummy_rounds, 100),
        "single": bench_single(style, single_rounds, 20),
        "smtp": bench_smtp(style, smtp_rounds, 50, args.server_thread),
    }
    result["elapsed_s"] = time.perf_counter() - started
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_table(result)
    missed = not (result["dummy"]["pass"] and result["smtp"]["pass"])
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
