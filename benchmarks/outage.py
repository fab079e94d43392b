#!/usr/bin/env python
"""What does a dead primary mailer cost a fleet of processes?

N messages are sent across K worker processes (each message on its own, as
``send_mail()`` does in a web request) through the router, whose routes are
``[primary, backup]`` — two local SMTP servers (``FaultySMTPServer``) — while
the primary is (a) refusing connections, (b) hanging until the SMTP timeout.
Side by side, in one run, with the same servers:

- **shared**: breakers in Redis (Django's ``RedisCache``; a ``redis-server``
  is started on a free port);
- **per-process**: breakers in each process's own memory (the embedded default);
- **no breaker**: ``"health": False`` (only the per-batch "connection failed"
  memory of the core router).

For each: failed attempts paid on the dead primary, wall time, throughput.
Target: with shared state the fleet pays <= failure_threshold + 1 attempts on
the dead mailer per cooldown whatever K is — plus, honestly reported, the sends
that were already in flight when the breaker opened (they had read "closed").

Then the cooldown cycles, shared state only: the primary refuses for a few
seconds under a steady stream of messages with a short, fixed cooldown, then
recovers. Failed primary attempts are grouped into bursts: the opening of the
breaker, then what each cooldown cost the fleet (one probe); and how soon
traffic went back to the primary after it recovered (fail-back).

Finally the hot-path cost with a healthy primary: Redis commands per
``send_messages()`` (target: one MGET, no writes), counted by Redis itself
(``INFO commandstats``).

Usage::

    python benchmarks/outage.py                # 400 messages, 8 processes
    python benchmarks/outage.py --quick        # 120 messages, 4 processes
    python benchmarks/outage.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailrouter.testing.redis import RedisServer

ROOT = Path(__file__).resolve().parent.parent
SMTP = "django.core.mail.backends.smtp.EmailBackend"


# -- coordinator (the workers are tests/health_worker.py) ------------------------------


@dataclass
class Cycles:
    """Healthy, then an outage under a short, fixed cooldown, then the primary recovers."""

    server: Any  # the primary's FaultySMTPServer: accept, refuse for `outage`, accept
    cooldown: float
    healthy: float  # seconds of normal traffic before the primary goes down
    outage: float
    recovery: float
    pause: float  # between one worker's messages: a steady stream, not a flood


def cycle_figures(
    results: list[dict[str, Any]], cycles: Cycles, failed_at: float, recovered_at: float
) -> dict[str, Any]:
    """Group failed primary attempts into bursts: the opening, then one per cooldown.

    Attempts less than half a cooldown apart belong to the same burst; with the
    cooldown fixed, every burst after the first is what one cooldown cost the fleet.
    """
    paid = sorted((ended, began) for r in results for began, ended in r["paid_at"])
    bursts: list[list[tuple[float, float]]] = []
    for ended, began in paid:
        if bursts and ended - bursts[-1][-1][0] < cycles.cooldown / 2:
            bursts[-1].append((ended, began))
        else:
            bursts.append([(ended, began)])
    opening = bursts[0] if bursts else []
    # Sessions already open on the primary when it went down die with it: no
    # breaker can spare those. The rest were begun after the outage started.
    in_flight = sum(1 for _, began in opening if began < failed_at)
    first_back = min(
        (t for r in results for t in r["primary_at"] if t >= recovered_at), default=None
    )
    # Once a cooldown has passed since the recovery, the probe has closed the breaker.
    settled = recovered_at + cycles.cooldown
    late = [using for r in results for t, using in r["sent_at"] if t >= settled]
    return {
        "opening": len(opening),
        "opening_in_flight": in_flight,
        "per_cooldown": [len(b) for b in bursts[1:]],
        "failback_after": None if first_back is None else first_back - recovered_at,
        "primary_share_after": late.count("primary") / len(late) if late else None,
    }


def run_fleet(
    mode: str,
    args: argparse.Namespace,
    ports: tuple[int, int],
    redis: RedisServer | None,
    cycles: Cycles | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        per_worker = args.messages // args.processes
        cooldown = cycles.cooldown if cycles else args.cooldown
        health = {
            "failure_threshold": args.threshold,
            "failure_rate": None,
            "cooldown": cooldown,
            # Cycles keep the cooldown fixed so that every cycle is alike.
            "max_cooldown": cooldown if cycles else cooldown * 8,
        }
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        config = {
            "health": False if mode == "none" else health,
            "redis": redis.url if redis is not None and mode == "shared" else None,
            "primary_port": ports[0],
            "backup_port": ports[1],
            "timeout": args.timeout,
            # A fixed number of messages, or (cooldown cycles) as many as fit in "duration".
            "count": None if cycles else per_worker,
            "duration": cycles.healthy + cycles.outage + cycles.recovery if cycles else None,
            "interval": cycles.pause if cycles else 0,
            "go": str(go),
        }
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.health_worker", json.dumps(config)],
                stdout=subprocess.PIPE,
                env=env,
                cwd=ROOT,
            )
            for _ in range(args.processes)
        ]
        # Every worker has imported Django, warmed up, and waits for "go".
        deadline = time.monotonic() + 120
        while len(list(Path(tmp).glob("go.ready.*"))) < args.processes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError("workers did not start")
            time.sleep(0.01)
        if redis is not None:
            redis.client().flushall()
            redis.client().config_resetstat()
        go.touch()
        failed_at = recovered_at = None
        if cycles is not None:
            time.sleep(cycles.healthy)
            failed_at = time.time()
            cycles.server.mode = "refuse"
            time.sleep(cycles.outage)
            cycles.server.mode = "accept"
            recovered_at = time.time()
        results = []
        for process in processes:
            out, _ = process.communicate(timeout=600)
            if process.returncode != 0:
                raise RuntimeError(f"worker failed ({process.returncode})")
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
    total = sum(r["count"] for r in results)
    figures: dict[str, Any] = {
        "paid": sum(r["paid"] for r in results),
        "wall": wall,
        "rate": total / wall if wall else float("inf"),
        "sent": sum(r["sent"] for r in results),
        "messages": total,
    }
    if cycles is not None and failed_at is not None and recovered_at is not None:
        figures |= cycle_figures(results, cycles, failed_at, recovered_at)
    if redis is not None and mode == "shared":
        commands = redis.commands()
        figures["redis_commands_per_send"] = sum(commands.values()) / total
        figures["redis_commands"] = commands
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--threshold", type=int, default=3)
    parser.add_argument("--cooldown", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=0.5, help="SMTP timeout (hang case)")
    parser.add_argument(
        "--cycle-cooldown", type=float, default=0.5, help="fixed cooldown of the cycles run"
    )
    parser.add_argument(
        "--cycle-outage", type=float, default=4.0, help="seconds the primary is down (cycles)"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.processes, args.cycle_outage = 120, 4, 2.0
    sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
    from mailrouter.testing import FaultySMTPServer
    from mailrouter.testing.redis import RedisServer

    try:
        redis: RedisServer | None = RedisServer().start()
        redis.client()
    except (RuntimeError, ImportError) as error:
        print(f"shared mode skipped: {error}", file=sys.stderr)
        redis = None
    modes = (["shared"] if redis else []) + ["per-process", "none"]
    report: dict[str, Any] = {
        "messages": args.messages,
        "processes": args.processes,
        "threshold": args.threshold,
        "cooldown": args.cooldown,
        "timeout": args.timeout,
        "outages": {},
    }
    try:
        with FaultySMTPServer() as primary, FaultySMTPServer() as backup:
            for outage in ("refuse", "hang_greeting"):
                primary.mode = outage
                report["outages"][outage] = {
                    mode: run_fleet(mode, args, (primary.port, backup.port), redis)
                    for mode in modes
                }
            if redis is not None:
                primary.mode = "accept"
                cycles = Cycles(
                    server=primary,
                    cooldown=args.cycle_cooldown,
                    healthy=1.0,
                    outage=args.cycle_outage,
                    recovery=max(1.0, 3 * args.cycle_cooldown),
                    pause=0.01,
                )
                report["cycles"] = {
                    "cooldown": cycles.cooldown,
                    "healthy": cycles.healthy,
                    "outage": cycles.outage,
                    "recovery": cycles.recovery,
                    **run_fleet("shared", args, (primary.port, backup.port), redis, cycles),
                }
                primary.mode = "accept"
                report["healthy"] = run_fleet("shared", args, (primary.port, backup.port), redis)
    finally:
        if redis is not None:
            redis.stop()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_report(report)


def print_report(report: dict[str, Any]) -> None:
    labels = {"shared": "shared (Redis)", "per-process": "per-process", "none": "no breaker"}
    print(
        f"{report['messages']} messages across {report['processes']} processes, "
        f"failure_threshold {report['threshold']}, cooldown {report['cooldown']:g}s, "
        f"SMTP timeout {report['timeout']:g}s"
    )
    titles = {
        "refuse": "primary refusing connections",
        "hang_greeting": "primary hanging until the timeout",
    }
    for outage, rows in report["outages"].items():
        print(f"\n{titles[outage]}:")
        print(
            f"  {'state':16} {'attempts on dead primary':>25} {'wall time':>10} "
            f"{'msgs/s':>8} {'sent':>9}"
        )
        for mode, row in rows.items():
            print(
                f"  {labels[mode]:16} {row['paid']:>25} {row['wall']:>9.2f}s "
                f"{row['rate']:>8.0f} {row['sent']:>4}/{row['messages']}"
            )
        if "shared" in rows:
            bound = report["threshold"] + report["processes"] - 1
            print(
                f"  shared: {rows['shared']['paid']} paid; bound = threshold + in-flight "
                f"sends of the other processes = {bound}"
            )
    if "cycles" in report:
        c = report["cycles"]
        limit = report["threshold"] + 1
        worst = max(c["per_cooldown"], default=0)
        print(
            f"\ncooldown cycles, shared state, a steady stream of messages: the primary fails "
            f"mid-stream and refuses for {c['outage']:g}s (fixed {c['cooldown']:g}s cooldown), "
            f"then recovers ({c['messages']} messages, {c['sent']} sent):"
        )
        print(
            f"  opening the breaker: {c['opening']} failed attempts: {c['opening_in_flight']} "
            f"sessions open when the primary went down, {c['opening'] - c['opening_in_flight']} "
            f"begun after (threshold {report['threshold']} + sends begun before the "
            f"breaker opened)"
        )
        print(
            f"  each later cooldown: {c['per_cooldown']} attempts "
            f"(max {worst}; target <= threshold + 1 = {limit}: "
            f"{'PASS' if worst <= limit else 'MISS'})"
        )
        if c["failback_after"] is None:
            print("  fail-back: the primary took no message after it recovered")
        else:
            share = c["primary_share_after"]
            print(
                f"  fail-back: first message on the primary {c['failback_after']:.2f}s after it "
                f"recovered; {share:.0%} of messages on the primary once a cooldown had passed"
            )
    if "healthy" in report:
        healthy = report["healthy"]
        print(
            f"\nhot path, healthy primary, shared state: "
            f"{healthy['redis_commands_per_send']:.2f} Redis commands per send_messages() "
            f"{healthy['redis_commands']}"
        )


if __name__ == "__main__":
    main()
