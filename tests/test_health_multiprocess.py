"""Several OS processes share breaker state in a real Redis.

Four worker processes (tests/health_worker.py) each send one message every
few milliseconds through the router to two real local SMTP servers. The test
takes the primary down, watches the shared breaker in Redis, and brings the
primary back; afterwards it reads every worker's log and checks that:

- the fleet paid few failed attempts on the dead primary before everyone
  skipped it: at most ``failure_threshold`` plus the sends that were already
  in flight when the breaker opened (at most one per other worker);
- after each cooldown exactly one probe ran, fleet-wide;
- after the primary recovered, traffic returned to it;
- no message was lost or sent twice.

Cooldowns are short real times (1 s, doubling): this is the one test where
several processes need a shared clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from mailrouter.health.breaker import Breaker, State
from mailrouter.health.settings import HealthSettings
from mailrouter.health.store import store_for
from mailrouter.testing import FaultySMTPServer
from mailrouter.testing.redis import RedisServer

from .health_fixtures import redis_caches
from .processes import ROOT, child_env

WORKERS = 4
THRESHOLD = 3
COOLDOWN = 1.0


def start_workers(tmp_path: Path, redis: RedisServer, primary: int, backup: int,
                  count: int | None = None) -> list[subprocess.Popen[bytes]]:
    processes = []
    for worker in range(WORKERS):
        config = {
            "id": worker, "log": str(tmp_path / f"w{worker}.log"), "stop": str(tmp_path / "stop"),
            "count": count, "interval": 0.01, "primary_port": primary, "backup_port": backup,
            "timeout": 2, "redis": redis.url,
            "health": {"failure_threshold": THRESHOLD, "failure_rate": None,
                       "cooldown": COOLDOWN, "max_cooldown": 4 * COOLDOWN},
        }
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tests.health_worker", json.dumps(config)],
            cwd=ROOT, env=child_env(),
        ))
    return processes


def read_logs(tmp_path: Path) -> list[dict[str, Any]]:
    records = []
    for log in sorted(tmp_path.glob("w*.log")):
        records += [json.loads(line) for line in log.read_text().splitlines() if line]
    return sorted(records, key=lambda r: r["t"])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def servers() -> Iterator[tuple[FaultySMTPServer, FaultySMTPServer]]:
    with FaultySMTPServer() as primary, FaultySMTPServer() as backup:
        yield primary, backup


def test_the_fleet_shares_breakers_probes_once_and_fails_back(
    tmp_path: Path, redis: RedisServer, servers: tuple[FaultySMTPServer, FaultySMTPServer],
) -> None:
    primary, backup = servers
    with override_settings(CACHES=redis_caches(redis)):
        store = store_for(HealthSettings(cache="health"))

        def breaker() -> Breaker:
            return store.load_breaker("primary")

        processes = start_workers(tmp_path, redis, primary.port, backup.port)
        try:
            wait_until(lambda: len(primary.messages) >= 4 * WORKERS, 30, "workers to start")
            primary.mode = "refuse"
            down_at = time.time()
            wait_until(lambda: breaker().state is State.OPEN, 10, "the breaker to open")
            opened_at = time.time()
            first_open = breaker()
            # The first probe (after COOLDOWN) fails: the breaker re-opens.
            wait_until(lambda: breaker().generation > first_open.generation, 10, "a probe")
            assert breaker().state is State.OPEN and breaker().openings == 2
            primary.mode = "accept"
            up_at = time.time()
            # The next probe (after 2 * COOLDOWN) succeeds: closed again.
            wait_until(lambda: breaker().state is State.CLOSED, 10, "the breaker to close")
            closed_at = time.time()
            time.sleep(0.3)
        finally:
            (tmp_path / "stop").touch()
            for process in processes:
                process.wait(timeout=30)
        assert [p.returncode for p in processes] == [0] * WORKERS

    records = read_logs(tmp_path)
    sends = [r for r in records if r["event"] == "send"]
    states = [(r["old"], r["new"]) for r in records if r["event"] == "state"]

    def primary_failures(start: float, end: float) -> int:
        """Failed primary attempts of sends started in (start, end) and
        finished after the primary went down."""
        return sum(1 for r in sends if start < r["t"] < end and r["end"] > down_at
                   for alias, outcome, _ in r["attempts"]
                   if alias == "primary" and outcome == "not_sent")

    # Before the breaker opened: the threshold, plus sends already in flight
    # (one per other worker at most: each worker sends one message at a time).
    paid = primary_failures(0, opened_at)
    print(f"\nfailed attempts on the dead primary before it was skipped: {paid} "
          f"(threshold {THRESHOLD}, {WORKERS} processes)")
    failures = [(round(r["t"] - down_at, 4), round(r["end"] - down_at, 4), r["w"])
                for r in sends for alias, outcome, _ in r["attempts"]
                if alias == "primary" and outcome == "not_sent"]
    assert THRESHOLD <= paid <= THRESHOLD + WORKERS - 1, (failures, opened_at - down_at)
    # While open: exactly one probe per cooldown, across all processes.
    assert primary_failures(opened_at, up_at) == 1
    assert states.count(("open", "half_open")) == 2  # one per cooldown, fleet-wide
    assert states.count(("closed", "open")) == 1
    assert states.count(("half_open", "open")) == 1
    assert states.count(("half_open", "closed")) == 1
    # Fail-back: everything sent after the breaker closed went to the primary.
    after = [r for r in sends if r["t"] > closed_at]
    assert after and all(r["attempts"] == [["primary", "accepted", r["attempts"][0][2]]]
                         for r in after)
    # Nothing lost, nothing sent twice.
    assert all(r["status"] == "sent" for r in sends)
    received = [m.message_id for m in primary.messages + backup.messages]
    assert sorted(received) == sorted(r["mid"] for r in sends)
    assert len(set(received)) == len(received)
