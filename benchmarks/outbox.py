#!/usr/bin/env python
"""The durable outbox, side by side with sending directly and with
django-post_office and django-mailer, in one run against the same fake servers.

1. Cost of one ``send_mail()`` in the request (median per call, autocommit):
   the outbox (one INSERT into PostgreSQL) vs the router sending directly to a
   local SMTP server vs directly to a fake ESP (Mailgun API) answering in 50 ms;
   and django-post_office's / django-mailer's enqueue on the same database.
2. Drain throughput to the 50 ms ESP with 1, 4 and 8 workers on PostgreSQL,
   measured at the ESP (first to last message received): ``outbox-worker``
   processes, and one ``outbox-worker --concurrency N`` process (threads);
   ``send_queued_mail --processes N`` (post_office); N ``send_mail``
   processes (django-mailer, its file lock off).
3. The same SIGKILL schedule for each system: every worker process is killed
   at fixed moments of a drain and restarted, then the queue is drained
   cleanly. Counted at the ESP: Message-IDs received twice (duplicates) and
   never received (lost); for the outbox also rows flagged ``uncertain``.

django-post_office and django-mailer are installed from PyPI into this
environment when missing (never vendored); ``--only-outbox`` skips them.
Needs PostgreSQL (``initdb``/``pg_ctl``; run as root, the server runs as the
``postgres`` user) and the test extra (psycopg, anymail).

    python benchmarks/outbox.py              # a few minutes
    python benchmarks/outbox.py --quick      # about a minute
    python benchmarks/outbox.py --json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.postgres_fixtures import PostgresServer, postgres_bin_dir  # noqa: E402

from mailrouter.testing import FakeESPServer, FaultySMTPServer  # noqa: E402

ESP_DOMAIN = "shop.esp.test"
OTHERS = {"post_office": "django-post-office", "mailer": "django-mailer"}
SYSTEM_NAMES = {"mailrouter": "mailrouter outbox", "post_office": "django-post_office",
                "mailer": "django-mailer",
                "mailrouter_threads": "  (1 process, threads)"}


class Bench:
    def __init__(self, pg: PostgresServer, smtp: FaultySMTPServer, esp: FakeESPServer) -> None:
        self.pg, self.smtp, self.esp = pg, smtp, esp
        self._databases = 0

    def env(self, **config: Any) -> dict[str, str]:
        self._databases += 1
        database = f"bench_{self._databases}"
        self.pg.create_database(database)
        settings = {"database": database, "pg_port": self.pg.port, "smtp_port": self.smtp.port,
                    "esp_url": self.esp.mailgun_api_url, **config}
        return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
                "DJANGO_SETTINGS_MODULE": "tests.outbox_process_settings",
                "MAILROUTER_OUTBOX_TEST": json.dumps(settings)}

    def rows(self, env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        database = json.loads(env["MAILROUTER_OUTBOX_TEST"])["database"]
        with psycopg.connect(self.pg.dsn(database)) as conn:
            return list(conn.execute(sql))


def run(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, *args], env=env, cwd=ROOT, check=True, timeout=600,
                   stdout=subprocess.DEVNULL)


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    # Own session: a kill reaches the whole process group (post_office's pool).
    return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    process.wait(timeout=60)


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- 1. enqueue cost --------------------------------------------------------------------


def measure_enqueue(bench: Bench, systems: list[str], rounds: int, calls: int) -> dict[str, Any]:
    arms = {"outbox (PostgreSQL)": ({}, ESP_DOMAIN),
            "direct to SMTP": ({"front": "router"}, "example.com"),
            "direct to ESP (50 ms)": ({"front": "router"}, ESP_DOMAIN)}
    for system in systems:
        if system != "mailrouter":
            arms[SYSTEM_NAMES[system]] = ({"system": system}, ESP_DOMAIN)
    clients = {
        name: subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "outbox_client.py"), domain],
            env=bench.env(**config), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )
        for name, (config, domain) in arms.items()
    }
    durations: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    try:
        for round_number in range(rounds + 1):
            order = names[round_number % len(names):] + names[:round_number % len(names)]
            for name in order:
                client = clients[name]
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write(f"{calls}\n")
                client.stdin.flush()
                measured = json.loads(client.stdout.readline())
                if round_number:  # the first round warms up (imports, connections)
                    durations[name].extend(measured)
    finally:
        for client in clients.values():
            if client.stdin is not None:
                client.stdin.close()
            client.wait(timeout=60)
    outbox = statistics.median(durations["outbox (PostgreSQL)"])
    return {name: {"median_us": statistics.median(values) * 1e6,
                   "vs_outbox": statistics.median(values) / outbox}
            for name, values in durations.items()}


# -- 2. drain throughput ----------------------------------------------------------------


def worker_commands(system: str, workers: int) -> list[tuple[str, ...]]:
    if system == "mailrouter_threads":
        return [("-m", "django", "mailrouter", "outbox-worker", "--batch", "5",
                 "--poll-interval", "0.1", "--concurrency", str(workers))]
    if system == "mailrouter":
        return [("-m", "django", "mailrouter", "outbox-worker", "--batch", "5",
                 "--poll-interval", "0.1")] * workers
    if system == "post_office":
        return [("-m", "django", "send_queued_mail", "--processes", str(workers),
                 "--log-level", "0")]
    return [("-m", "django", "send_mail")] * workers


def pending(bench: Bench, env: dict[str, str]) -> int:
    [(count,)] = bench.rows(env, "SELECT count(*) FROM mailrouter_outbox_outboxmessage "
                                 "WHERE status IN ('queued', 'claimed', 'sending')")
    return int(count)


def measure_drain(bench: Bench, system: str, workers: int, rows: int) -> dict[str, Any]:
    env = bench.env(system=system.removesuffix("_threads"), lease=2)
    run(env, "-m", "tests.outbox_enqueue", str(rows), "1")
    bench.esp.reset()
    processes = [start(env, *command) for command in worker_commands(system, workers)]
    try:
        wait_for(lambda: len(bench.esp.messages) > 0, 120)
        first = time.monotonic()
        done = wait_for(lambda: len(bench.esp.messages) >= rows, 300)
        last = time.monotonic()
    finally:
        for process in processes:
            kill(process, signal.SIGTERM if system.startswith("mailrouter") else signal.SIGKILL)
    received = len(bench.esp.messages)
    return {"workers": workers, "rows": rows, "received": received, "complete": done,
            "msgs_per_s": (received - 1) / max(last - first, 1e-9)}


# -- 3. SIGKILL schedule ----------------------------------------------------------------


def measure_crash(bench: Bench, system: str, rows: int, kills: list[float]) -> dict[str, Any]:
    env = bench.env(system=system, lease=2)
    run(env, "-m", "tests.outbox_enqueue", str(rows), "1")
    bench.esp.reset()
    commands = worker_commands(system, 4)
    processes = [start(env, *command) for command in commands]
    wait_for(lambda: len(bench.esp.messages) > 0, 120)
    started = time.monotonic()
    for moment in kills:
        time.sleep(max(0.0, started + moment - time.monotonic()))
        for process in processes:
            kill(process)
        processes = [start(env, *command) for command in commands]
    if system == "mailrouter":
        # Killed workers' leases end; the running workers finish the queue.
        wait_for(lambda: pending(bench, env) == 0, 120)
        for process in processes:
            kill(process, signal.SIGTERM)
    else:
        for process in processes:
            process.wait(timeout=300)
        # One clean run afterwards, as an operator would after a crash.
        run(env, *commands[0])
    wait_for(lambda: False, 0.5)  # in-flight requests settle at the ESP
    ids: Counter[str | None] = Counter(m.message_id for m in bench.esp.messages)
    expected = {f"<outbox-{n}@enqueue.test>" for n in range(rows)}
    result = {"rows": rows, "kills": len(kills),
              "duplicates": sum(count - 1 for count in ids.values() if count > 1),
              "lost": len(expected - set(ids))}
    if system == "mailrouter":
        statuses = dict(bench.rows(env, "SELECT status, count(*) FROM "
                                        "mailrouter_outbox_outboxmessage GROUP BY status"))
        result["uncertain"] = statuses.get("uncertain", 0)
        result["statuses"] = statuses
        # An uncertain row the ESP never got is flagged, not silently lost.
        flagged = {mid for (mid,) in bench.rows(
            env, "SELECT message_id FROM mailrouter_outbox_outboxmessage "
                 "WHERE status = 'uncertain'")}
        result["lost"] = len(expected - set(ids) - flagged)
        result["uncertain_not_received"] = len(flagged - set(ids))
    return result


# -- main -------------------------------------------------------------------------------


def ensure_installed(systems: list[str]) -> None:
    missing = [OTHERS[s] for s in systems if s in OTHERS and importlib.util.find_spec(s) is None]
    if not missing:
        return
    uv = shutil.which("uv") or str(ROOT / ".venv-tools" / "bin" / "uv")
    if os.path.exists(uv):
        command = [uv, "pip", "install", "-q", "--python", sys.executable, *missing]
    else:
        command = [sys.executable, "-m", "pip", "install", "-q", *missing]
    print(f"installing {', '.join(missing)} from PyPI ...", file=sys.stderr)
    subprocess.run(command, check=True)


def report_text(report: dict[str, Any]) -> None:
    print("cost of one send_mail() in the request (median, autocommit):")
    for name, row in report["enqueue"].items():
        print(f"  {name:<24} {row['median_us']:>10.0f} us   x{row['vs_outbox']:.1f} the outbox")
    print(f"\ndrain throughput to a 50 ms ESP, PostgreSQL ({report['drain_rows']} rows, "
          "first to last received):")
    for system, rows in report["drain"].items():
        figures = "   ".join(f"{r['workers']} workers: {r['msgs_per_s']:6.1f}/s"
                             + ("" if r["complete"] else " (incomplete)") for r in rows)
        print(f"  {SYSTEM_NAMES[system]:<20} {figures}")
    print(f"\nSIGKILL schedule (4 workers, every process killed at {report['kills']} s of "
          "the drain and restarted), counted at the ESP:")
    for system, row in report["crash"].items():
        extra = (f", uncertain (flagged, not resent) {row['uncertain']}"
                 if "uncertain" in row else "")
        print(f"  {SYSTEM_NAMES[system]:<20} {row['rows']} rows: duplicates {row['duplicates']}, "
              f"lost {row['lost']}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only-outbox", action="store_true",
                        help="skip django-post_office and django-mailer")
    parser.add_argument("--workers", default="1,4,8", help="worker counts of the drain runs")
    parser.add_argument("--rows", type=int, help="rows per drain and crash run")
    parser.add_argument("--kills", help="seconds of the SIGKILL schedule, e.g. 0.5,1.5")
    parser.add_argument("--calls", type=int, help="send_mail() calls per arm and round")
    args = parser.parse_args()
    systems = ["mailrouter"] if args.only_outbox else ["mailrouter", "post_office", "mailer"]
    ensure_installed(systems)
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
    rounds, calls, drain_rows = (2, 20, 100) if args.quick else (5, 40, 400)
    kills = [0.5, 1.5, 2.5] if args.quick else [0.5, 1.2, 2.0, 2.8, 3.6]
    drain_rows = args.rows or drain_rows
    calls = args.calls or calls
    if args.kills:
        kills = [float(k) for k in args.kills.split(",")]
    pg = PostgresServer(bin_dir).start()
    smtp = FaultySMTPServer().start()
    esp = FakeESPServer(latency=0.05).start()
    try:
        bench = Bench(pg, smtp, esp)
        report: dict[str, Any] = {"drain_rows": drain_rows, "kills": kills}
        report["enqueue"] = measure_enqueue(bench, systems, rounds, calls)
        drained = [systems[0], "mailrouter_threads", *systems[1:]]
        report["drain"] = {
            system: [measure_drain(bench, system, int(n), drain_rows)
                     for n in args.workers.split(",")]
            for system in drained
        }
        report["crash"] = {system: measure_crash(bench, system, drain_rows, kills)
                           for system in systems}
    finally:
        esp.stop()
        smtp.stop()
        pg.stop()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        report_text(report)


if __name__ == "__main__":
    main()
