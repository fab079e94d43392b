"""Several OS processes share one status page through a real Redis.

Four worker processes (tests/health_worker.py) send a message every few
milliseconds through primary → backup, with a status page (refreshed every
second) for the primary served by a real local HTTP server. The page goes
operational → major_outage → operational. Afterwards:

- the page was fetched about once per refresh interval for the whole fleet,
  not once per process (the refresh lease in Redis);
- while the page said down the fleet skipped the primary, and went back
  to it after the page recovered;
- each change was signalled once for the fleet;
- no message was lost or sent twice.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

from mailrouter.testing import FaultySMTPServer
from mailrouter.testing.redis import RedisServer

from .processes import ROOT, child_env
from .status_server import SUMMARY, StatusPageServer, statuspage
from .test_health_multiprocess import read_logs, wait_until

WORKERS = 4
REFRESH = 1.0


def test_the_fleet_fetches_each_page_once_per_interval_and_follows_it(
    tmp_path: Path, redis: RedisServer,
) -> None:
    env = child_env()
    with StatusPageServer() as pages, FaultySMTPServer() as primary, \
            FaultySMTPServer() as backup:
        pages.pages[SUMMARY] = statuspage({"API": "operational"})
        processes = []
        for worker in range(WORKERS):
            config = {
                "id": worker, "log": str(tmp_path / f"w{worker}.log"),
                "stop": str(tmp_path / "stop"), "interval": 0.01,
                "primary_port": primary.port, "backup_port": backup.port, "timeout": 2,
                "redis": redis.url, "health": {"failure_threshold": 3, "cooldown": 30},
                "status_pages": {"primary": {
                    "url": pages.url(SUMMARY), "components": ["API"], "allow_http": True,
                    "refresh": REFRESH, "timeout": 1,
                }},
            }
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tests.health_worker", json.dumps(config)],
                cwd=ROOT, env=env,
            ))
        try:
            wait_until(lambda: pages.hits[SUMMARY] >= 1 and len(primary.messages) >= 20,
                       30, "workers to start")
            started = time.monotonic()
            pages.pages[SUMMARY] = statuspage({"API": "major_outage"})
            down_at = time.time()
            sent_before = len(backup.messages)
            wait_until(lambda: len(backup.messages) >= sent_before + 40, 15,
                       "traffic to move to the backup")
            pages.pages[SUMMARY] = statuspage({"API": "operational"})
            up_at = time.time()
            received = len(primary.messages)
            wait_until(lambda: len(primary.messages) >= received + 40, 15,
                       "traffic to return to the primary")
            elapsed = time.monotonic() - started
        finally:
            (tmp_path / "stop").touch()
            for process in processes:
                process.wait(timeout=30)
        assert [p.returncode for p in processes] == [0] * WORKERS
        fetches = pages.hit_times[SUMMARY]
        received_ids = [m.message_id for m in primary.messages + backup.messages]

    # One fetch per interval for the fleet (+1 for the first, +1 for the edges
    # of the measured span), where one per process would be four times that.
    during = [t for t in fetches if t >= started]
    print(f"\n{len(during)} fetches in {elapsed:.1f}s by {WORKERS} processes "
          f"(refresh every {REFRESH:g}s)")
    assert len(during) <= elapsed / REFRESH + 2
    gaps = [b - a for a, b in itertools.pairwise(fetches)]
    assert min(gaps) > REFRESH / 2, gaps  # leases keep fetches an interval apart

    records = read_logs(tmp_path)
    sends = [r for r in records if r["event"] == "send"]
    changes = [(r["old"], r["new"]) for r in records if r["event"] == "status"]
    assert changes == [("unknown", "operational"), ("operational", "down"),
                       ("down", "operational")]
    # Once the down page was read, the primary was skipped, not tried.
    seen_down = min(r["t"] for r in records if r["event"] == "status" and r["new"] == "down")
    while_down = [r for r in sends if seen_down + 0.1 < r["t"] < up_at]
    assert while_down and all(
        r["attempts"][0][:2] == ["primary", "skipped"] for r in while_down)
    assert seen_down - down_at < 5 * REFRESH  # within a refresh or two (lenient under load)
    # The breaker was not blamed for those skips: no circuit state changes at all.
    assert not [r for r in records if r["event"] == "state"]
    # Nothing lost, nothing sent twice.
    assert all(r["status"] == "sent" for r in sends)
    assert sorted(received_ids) == sorted(r["mid"] for r in sends)
    assert len(set(received_ids)) == len(received_ids)
