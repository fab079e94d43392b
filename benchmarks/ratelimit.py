#!/usr/bin/env python
"""Does a fleet-wide rate limit hold across processes, through Redis?

``--processes`` (default 3) worker processes send mail through the router
at ``--offered`` messages per second in total (default 60), in batches of
``--batch``, for ``--seconds`` (default 30). The router's routes are
``[primary, overflow]`` (Anymail's Mailgun and Postmark backends against two
local fake ESPs in a child process), with ``rate_limits = {"primary":
"20/s"}`` (``--limit``; no burst) shared through a real ``redis-server``
(started here) and ``max_wait = 0``, so what the limit refuses overflows to
the second ESP.

Printed, all counted at the fake ESPs and in Redis:

- the worst one-second window at the primary: the most messages it received
  within any one second (arrivals sampled every 2 ms); target: at most the
  limit;
- the primary's aggregate rate over the whole run and after the first
  second; target: within 5 % of the limit;
- how many messages overflowed, and that every message ended at exactly one
  ESP (none lost);
- Redis commands per message (``INFO commandstats``): the rate-limit script
  (one call per attempt at the primary, none for a message overflowing
  while the primary is known to be out of budget) and everything else (the
  health read).

Usage::

    pip install -e . django-anymail redis
    python benchmarks/ratelimit.py               # 30 s
    python benchmarks/ratelimit.py --seconds 5   # a quick look (the burst weighs more)
    python benchmarks/ratelimit.py --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

API_KEY = "key-bench-0123456789"
DOMAIN = "mg.example.com"
TOLERANCE = 0.05
SAMPLE_EVERY = 0.002


# -- the fake ESPs, in a child process, sampling what they received ----------------


def _serve(conn: Connection) -> None:
    from mailrouter.testing import FakeESPServer

    with FakeESPServer(api_key=API_KEY) as primary, FakeESPServer(api_key=API_KEY) as overflow:
        samples: list[tuple[float, int, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(SAMPLE_EVERY):
                samples.append((time.time(), len(primary.messages), len(overflow.messages)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        conn.send((primary.port, overflow.port))
        conn.recv()  # stop
        stop.set()
        sampler.join()
        ids = [str(r.message_id) for r in primary.messages + overflow.messages]
        conn.send({"samples": samples, "ids": ids})


# -- one worker process ------------------------------------------------------------------


def worker(config: dict[str, Any]) -> None:
    import warnings

    warnings.simplefilter("ignore")  # Django 6.1 deprecates EMAIL_BACKEND; it still works
    import django
    from django.conf import settings

    def leaf(backend: str, port: int, **options: Any) -> dict[str, Any]:
        return {"BACKEND": backend, "OPTIONS": options}

    settings.configure(
        DEBUG=False,
        INSTALLED_APPS=["mailrouter", "anymail"],
        DEFAULT_FROM_EMAIL=f"shop@{DOMAIN}",
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "health": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                       "LOCATION": config["redis"],
                       "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}},
        },
        EMAIL_BACKEND="mailrouter.backend.RouterBackend",
        MAILROUTER={
            "MAILERS": {
                "primary": {"BACKEND": "anymail.backends.mailgun.EmailBackend",
                            "OPTIONS": {"api_key": API_KEY, "sender_domain": DOMAIN,
                                        "api_url": f"http://127.0.0.1:{config['primary']}/v3/"}},
                "overflow": {"BACKEND": "anymail.backends.postmark.EmailBackend",
                             "OPTIONS": {"server_token": API_KEY,
                                         "api_url": f"http://127.0.0.1:{config['overflow']}/"}},
            },
            "OPTIONS": {
                "routes": [{"mailers": ["primary", "overflow"]}],
                "rate_limits": {"primary": f"{config['limit']}/s"},
                "max_wait": 0,
                "health": {"cache": "health"},
            },
        },
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.mail import EmailMessage, get_connection

    router = get_connection()
    router.open()
    batch_every = config["batch"] / config["rate"]
    counts = {"primary": 0, "overflow": 0, "none": 0}
    Path(f"{config['start']}.ready{config['id']}").touch()
    while not os.path.exists(config["start"]):
        time.sleep(0.005)
    deadline = time.monotonic() + config["seconds"]
    next_batch = time.monotonic()
    number = 0
    while next_batch < deadline:
        batch = [
            EmailMessage(f"w{config['id']}m{number + i}", "body", None, [f"u{i}@example.com"])
            for i in range(config["batch"])
        ]
        number += len(batch)
        router.fail_silently = True
        router.send_messages(batch)
        for message in batch:
            counts[message.sent_using or "none"] += 1  # type: ignore[attr-defined]
        next_batch += batch_every
        time.sleep(max(0.0, next_batch - time.monotonic()))
    router.close()
    print(json.dumps(counts))


# -- the benchmark -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return process, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.02)
    raise SystemExit("redis-server did not start")


def rate_between(samples: list[tuple[float, int, int]], start: float, end: float) -> float:
    def count_at(moment: float) -> int:
        before = [count for at, count, _ in samples if at <= moment]
        return before[-1] if before else 0

    return (count_at(end) - count_at(start)) / (end - start)


def arrivals(samples: list[tuple[float, int, int]]) -> list[float]:
    """When each primary message arrived (the first sample that counted it)."""
    times: list[float] = []
    for at, count, _ in samples:
        times += [at] * (count - len(times))
    return times


def worst_window(times: list[float], length: float) -> int:
    """The most events in any half-open window ``[t, t + length)``."""
    worst = end = 0
    for begin, moment in enumerate(times):
        while end < len(times) and times[end] < moment + length:
            end += 1
        worst = max(worst, end - begin)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--offered", type=float, default=60.0, help="messages/s, all processes")
    parser.add_argument("--limit", type=int, default=20, help="the primary's limit, per second")
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return

    import redis

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    esp = context.Process(target=_serve, args=(child,), daemon=True)
    esp.start()
    primary_port, overflow_port = parent.recv()
    redis_process, redis_url = start_redis()
    root = Path(__file__).resolve().parent.parent
    path = f"{root / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start_file = Path(tmp) / "start"
            workers = []
            for number in range(args.processes):
                config = {"id": number, "redis": redis_url, "primary": primary_port,
                          "overflow": overflow_port, "start": str(start_file),
                          "seconds": args.seconds, "batch": args.batch, "limit": args.limit,
                          "rate": args.offered / args.processes}  # fmt: skip
                workers.append(subprocess.Popen(
                    [sys.executable, __file__, "--worker", json.dumps(config)],
                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                ))
            # Every worker has imported Django and waits for the start file.
            while not all(Path(f"{start_file}.ready{n}").exists() for n in range(args.processes)):
                if any(process.poll() is not None for process in workers):
                    raise SystemExit(f"a worker failed:\n{workers[0].communicate()[1].decode()}")
                time.sleep(0.02)
            client = redis.Redis.from_url(redis_url)
            client.config_resetstat()
            started = time.time()
            start_file.touch()
            totals = {"primary": 0, "overflow": 0, "none": 0}
            for process in workers:
                out, err = process.communicate(timeout=args.seconds + 120)
                if process.returncode != 0:
                    raise SystemExit(f"a worker failed:\n{err.decode()[-3000:]}")
                for key, value in json.loads(out.decode().strip().splitlines()[-1]).items():
                    totals[key] += value
            ended = started + args.seconds
            stats = client.info("commandstats")
        parent.send("stop")
        received = parent.recv()
    finally:
        redis_process.kill()
        redis_process.wait()
        esp.join(10)

    samples = received["samples"]
    messages = sum(totals.values())
    ids = received["ids"]
    limit = args.limit
    worst = worst_window(arrivals(samples), 1.0)
    whole = rate_between(samples, started, ended)
    steady = rate_between(samples, started + 1.0, ended)
    script_calls = sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0)
                       for name in ("evalsha", "eval"))  # fmt: skip
    commands = {name.removeprefix("cmdstat_"): value.get("calls", 0)
                for name, value in stats.items() if "config" not in name}  # fmt: skip
    # INFO counts the commands a script runs as well (TIME and HGETALL once
    # per call; HINCRBY, PEXPIRE, HDEL, HSET when it changes the window); the
    # health cache uses none of them.
    inside_scripts = sum(commands.get(name, 0) for name in
                         ("time", "hgetall", "hincrby", "pexpire", "hdel", "hset"))  # fmt: skip
    all_calls = sum(commands.values()) - inside_scripts
    report = {
        "processes": args.processes,
        "seconds": args.seconds,
        "limit_per_s": limit,
        "worst_one_second_window": worst,
        "offered_per_s": args.offered,
        "messages": messages,
        "primary": totals["primary"],
        "overflow": totals["overflow"],
        "unsent": totals["none"],
        "received_at_esps": len(ids),
        "duplicates": len(ids) - len(set(ids)),
        "primary_rate_whole_run": round(whole, 2),
        "primary_rate_after_first_second": round(steady, 2),
        "deviation_whole_run": round(whole / limit - 1, 4),
        "deviation_after_first_second": round(steady / limit - 1, 4),
        "redis_script_calls_per_message": round(script_calls / max(1, messages), 3),
        #: Commands sent by clients (round trips), the script's own excluded.
        "redis_commands_per_message": round(all_calls / max(1, messages), 3),
        "redis_commands": commands,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.processes} processes offering {args.offered:g} msg/s in batches of "
              f"{args.batch} for {args.seconds:g} s; limit {limit}/s (no burst) on the primary, "
              "shared through Redis")  # fmt: skip
        print(f"  worst one-second window at the primary: {worst} messages "
              f"(target: at most {limit})")  # fmt: skip
        print(f"  messages: {messages}: primary {totals['primary']}, overflow "
              f"{totals['overflow']}, unsent {totals['none']}; received at the ESPs: "
              f"{len(ids)} ({report['duplicates']} duplicates)")  # fmt: skip
        print(f"  primary rate, whole run:          {whole:6.2f}/s "
              f"({report['deviation_whole_run']:+.1%}, target ±{TOLERANCE:.0%})")  # fmt: skip
        print(f"  primary rate, after the 1st second: {steady:6.2f}/s "
              f"({report['deviation_after_first_second']:+.1%})")  # fmt: skip
        print(f"  Redis commands (round trips) per message: "
              f"{report['redis_commands_per_message']:.3f}, of which the rate-limit script "
              f"{report['redis_script_calls_per_message']:.3f}; all: {commands}")  # fmt: skip


if __name__ == "__main__":
    main()
