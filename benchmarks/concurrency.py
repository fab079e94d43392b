#!/usr/bin/env python
"""What the router option ``concurrency`` buys with an HTTP ESP.

Two figures, measured in one run against a local fake ESP (``FakeESPServer``
in a child process, answering every request after ``--latency`` seconds, as
a real ESP's API does):

1. Throughput: ``--messages`` messages (default 1,000) sent through Anymail's
   real Mailgun backend used directly (serial, as Django and Anymail send a
   batch) versus the same leaf behind ``RouterBackend`` with ``concurrency``
   16. Target: router/direct >= 12x (the limit is 16x: 16 requests in flight).
2. Memory: ``--memory-messages`` messages (default 10,000) through the
   concurrent router in batches of 1,000; after each batch, the memory
   blocks Python still has allocated (``sys.getallocatedblocks()``) and the
   process's resident memory: both stay flat, not growing with the number
   of messages sent (RSS settles as glibc's per-thread malloc arenas warm
   up; ``MALLOC_ARENA_MAX=2`` flattens it from the start).

Each arm's messages are counted at the fake ESP: nothing lost, nothing twice.

Usage::

    pip install -e . django-anymail
    python benchmarks/concurrency.py                    # about 1.5 minutes
    python benchmarks/concurrency.py --messages 200 --memory-messages 2000
    python benchmarks/concurrency.py --json
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import sys
import time
import warnings
from multiprocessing.connection import Connection
from typing import Any

API_KEY = "key-bench-0123456789"
DOMAIN = "mg.example.com"
TARGET_RATIO = 12.0


def _serve(conn: Connection, latency: float) -> None:
    """Child process: the fake ESP, answering commands from the parent."""
    from mailrouter.testing import FakeESPServer

    with FakeESPServer(api_key=API_KEY) as server:
        server.latency = latency
        conn.send(server.port)
        while True:
            command = conn.recv()
            if command == "count":
                conn.send([str(r.message_id) for r in server.messages])
            elif command == "reset":
                server.reset()
                server.latency = latency
                conn.send(True)
            else:
                break


class ESPProcess:
    def __init__(self, latency: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, latency), daemon=True)
        self._process.start()
        if not self._conn.poll(30):
            raise RuntimeError("the fake ESP process did not start")
        self.port: int = self._conn.recv()

    def received(self) -> list[str]:
        self._conn.send("count")
        ids: list[str] = self._conn.recv()
        return ids

    def reset(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self._process.join(10)


def configure_django(port: int, concurrency: int) -> None:
    import django
    from django.conf import settings

    leaf = {
        "BACKEND": "anymail.backends.mailgun.EmailBackend",
        "OPTIONS": {"api_key": API_KEY, "sender_domain": DOMAIN,
                    "api_url": f"http://127.0.0.1:{port}/v3/"},
    }
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-only",
        INSTALLED_APPS=["mailrouter", "anymail"],
        DEFAULT_FROM_EMAIL=f"shop@{DOMAIN}",
        EMAIL_BACKEND="mailrouter.backend.RouterBackend",
        MAILROUTER={
            "MAILERS": {"mailgun": leaf},
            "OPTIONS": {"routes": [{"mailers": ["mailgun"]}], "concurrency": concurrency},
        },
        LOGGING_CONFIG=None,
    )
    django.setup()


def make_messages(count: int, start: int = 0) -> list[Any]:
    from django.core.mail import EmailMessage

    return [
        EmailMessage(
            f"Your order #{start + i}", f"Hello,\n\nyour order #{start + i} has shipped.\n",
            None, [f"customer{start + i}@example.com"],
        )
        for i in range(count)
    ]


def rss_mb() -> float:
    """Resident memory of this process now (Linux), in MB."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:  # not Linux: peak instead of current
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def timed_send(backend: Any, messages: list[Any]) -> float:
    started = time.perf_counter()
    sent = backend.send_messages(messages)
    elapsed = time.perf_counter() - started
    if sent != len(messages):
        raise SystemExit(f"only {sent} of {len(messages)} messages were sent")
    return elapsed


def check_received(esp: ESPProcess, messages: list[Any]) -> None:
    received = sorted(esp.received())
    expected = sorted(m.mailrouter_message_id for m in messages
                      if getattr(m, "mailrouter_message_id", None))  # fmt: skip
    if len(received) != len(messages) or (expected and received != expected):
        raise SystemExit(f"the ESP received {len(received)} messages, expected {len(messages)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--memory-messages", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per ESP request")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help=f"exit 1 below {TARGET_RATIO}x")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # Django 6.1 deprecates EMAIL_BACKEND; it still works

    esp = ESPProcess(args.latency)
    try:
        configure_django(esp.port, args.concurrency)
        from anymail.backends.mailgun import EmailBackend as MailgunBackend
        from django.conf import settings
        from django.core.mail import get_connection

        leaf_options = settings.MAILROUTER["MAILERS"]["mailgun"]["OPTIONS"]
        direct = MailgunBackend(**leaf_options)
        router = get_connection()

        # Warm-up (imports, first connections), not measured.
        timed_send(direct, make_messages(4))
        timed_send(router, make_messages(32))
        esp.reset()

        direct_batch = make_messages(args.messages)
        direct_seconds = timed_send(direct, direct_batch)
        check_received(esp, direct_batch)
        esp.reset()
        router_batch = make_messages(args.messages)
        router_seconds = timed_send(router, router_batch)
        check_received(esp, router_batch)
        esp.reset()

        memory: list[float] = []
        blocks: list[int] = []
        sent_total = 0
        chunk = 1000
        while sent_total < args.memory_messages:
            size = min(chunk, args.memory_messages - sent_total)
            batch = make_messages(size, start=sent_total)
            timed_send(router, batch)
            sent_total += size
            del batch
            gc.collect()
            memory.append(rss_mb())
            blocks.append(sys.getallocatedblocks())
        received = len(esp.received())
        if received != args.memory_messages:
            raise SystemExit(f"the ESP received {received} of {args.memory_messages}")
    finally:
        esp.stop()

    direct_rate = args.messages / direct_seconds
    router_rate = args.messages / router_seconds
    ratio = router_rate / direct_rate
    # Growth after the first batches (imports, pools, thread stacks settle).
    settled = memory[min(1, len(memory) - 1):]
    growth = settled[-1] - settled[0]
    blocks_growth = blocks[-1] - blocks[min(1, len(blocks) - 1)]
    report = {
        "messages": args.messages,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "direct": {"seconds": round(direct_seconds, 3), "msgs_per_s": round(direct_rate, 1)},
        "router": {"seconds": round(router_seconds, 3), "msgs_per_s": round(router_rate, 1)},
        "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "memory": {"messages": args.memory_messages, "batch": chunk,
                   "python_blocks_after_each_batch": blocks,
                   "python_blocks_growth": blocks_growth,
                   "rss_mb_after_each_batch": [round(m, 1) for m in memory],
                   "rss_growth_mb": round(growth, 1)},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.messages} messages, fake ESP (Mailgun API) answering after "
              f"{args.latency * 1000:.0f} ms, Python {sys.version.split()[0]}")  # fmt: skip
        print(f"  Anymail Mailgun backend directly (serial): {direct_seconds:7.2f} s "
              f"{direct_rate:8.1f} msg/s")  # fmt: skip
        label = f"router, concurrency {args.concurrency}:"
        print(f"  {label:<43}{router_seconds:7.2f} s {router_rate:8.1f} msg/s")
        print(f"  ratio: {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x, limit "
              f"{args.concurrency}x)")  # fmt: skip
        print(f"{args.memory_messages} messages through the concurrent router in batches of "
              f"{chunk}, after each batch:")  # fmt: skip
        print("  Python objects' memory blocks allocated: " + " ".join(map(str, blocks))
              + f"; growth after the first batch {blocks_growth:+d}")  # fmt: skip
        print("  RSS (MB): " + " ".join(f"{m:.1f}" for m in memory)
              + f"; growth after the first batch {growth:+.1f} MB (glibc keeps per-thread "
              "malloc arenas; MALLOC_ARENA_MAX=2 keeps RSS flat too)")  # fmt: skip
    if args.check and ratio < TARGET_RATIO:
        sys.exit(1)


if __name__ == "__main__":
    main()
