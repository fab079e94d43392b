"""The benchmarks stay runnable, and what they count is right.

Short runs of both scripts, as anyone would run them. Speed figures are not
asserted (they belong to the benchmark's printout, on a quiet machine); counts
are: nothing lost, attempts on a dead primary within the documented bound, one
Redis command per healthy send_messages().
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from .processes import ROOT, child_env


def run_json(script: str, *args: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=child_env(),
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def test_overhead_benchmark_runs() -> None:
    report = run_json(
        "overhead.py", "--dummy-rounds", "3", "--smtp-rounds", "2", "--pages-rounds", "3"
    )
    assert report["dummy"]["rounds"] == 3
    assert report["dummy"]["added_us_per_message"] > 0
    assert report["smtp"]["rounds"] == 2
    assert report["smtp"]["router_msgs_per_s"] > 0
    assert report["smtp"]["direct_msgs_per_s"] > 0
    # Status pages for every mailer: still one MGET per send_messages(), no writes.
    assert report["pages"]["rounds"] == 3
    assert report["pages"]["redis_commands"] == {"mget": 200}


def test_trace_benchmark_follows_one_message() -> None:
    report = run_json("trace.py")
    # The traced send reached the leaf, and what ran is package code only.
    assert report["calls_before_leaf"] is not None
    assert 0 < report["calls_before_leaf"] <= report["calls_total"]
    assert report["module_count"] == len(report["modules"])
    assert "mailrouter.backend" in report["modules"]
    assert all(name.startswith("mailrouter") for name in report["modules"])


def test_outage_benchmark_counts() -> None:
    processes, messages, threshold = 2, 12, 3
    report = run_json(
        "outage.py",
        "--processes", str(processes),
        "--messages", str(messages),
        "--threshold", str(threshold),
        "--timeout", "0.3",
        "--cycle-outage", "1.5",
    )  # fmt: skip
    for outage, rows in report["outages"].items():
        assert set(rows) == {"shared", "per-process", "none"}, outage
        for mode, row in rows.items():
            assert row["sent"] == row["messages"] == messages, (outage, mode)
        # Each message is its own batch: without breakers every one pays.
        assert rows["none"]["paid"] == messages, outage
        # Per process: the threshold in every process.
        assert rows["per-process"]["paid"] == threshold * processes, outage
        # Shared: the threshold plus at most one in-flight send per other process.
        assert threshold <= rows["shared"]["paid"] <= threshold + processes - 1, outage

    cycles = report["cycles"]
    assert cycles["sent"] == cycles["messages"] > 0
    begun_after = cycles["opening"] - cycles["opening_in_flight"]
    assert 0 <= begun_after <= threshold + processes - 1
    assert cycles["per_cooldown"], "the outage spans several cooldowns"
    assert max(cycles["per_cooldown"]) <= threshold + 1
    assert cycles["failback_after"] is not None, "traffic went back to the primary"

    assert report["healthy"]["redis_commands"] == {"mget": messages}


def test_concurrency_benchmark_counts() -> None:
    report = run_json(
        "concurrency.py", "--messages", "48", "--memory-messages", "1200", "--latency", "0.01",
    )  # fmt: skip
    # The script itself checks that the fake ESP received every message once.
    assert report["messages"] == 48 and report["concurrency"] == 16
    assert report["router"]["msgs_per_s"] > 0 and report["direct"]["msgs_per_s"] > 0
    assert len(report["memory"]["rss_mb_after_each_batch"]) == 2
    assert len(report["memory"]["python_blocks_after_each_batch"]) == 2


def test_ratelimit_benchmark_counts() -> None:
    seconds = 2.0
    report = run_json("ratelimit.py", "--processes", "3", "--seconds", str(seconds))
    assert report["unsent"] == 0 and report["duplicates"] == 0
    assert report["received_at_esps"] == report["messages"] > 0
    assert report["primary"] + report["overflow"] == report["messages"]
    # 60/s offered against 20/s: the rest overflowed. The primary got at most
    # the limit in any window of one second (one period, so at most
    # seconds + 1 windows' worth). The worst one-second window as the fake ESP
    # saw it: a budget reserved ahead with a refill on top gave twice the limit;
    # messages delayed across a window's edge on a busy machine add a few.
    assert report["overflow"] > 0
    assert report["primary"] <= report["limit_per_s"] * (seconds + 1)
    assert report["worst_one_second_window"] <= report["limit_per_s"] * 3 // 2
    # A message overflowing while the primary is known out of budget costs no call.
    assert report["redis_script_calls_per_message"] < 1


def test_outbox_benchmark_counts() -> None:
    report = run_json("outbox.py", "--only-outbox", "--quick", "--workers", "2",
                      "--rows", "40", "--calls", "5", "--kills", "0.3,0.9")
    assert set(report["enqueue"]) == {
        "outbox (PostgreSQL)", "direct to SMTP", "direct to ESP (50 ms)"
    }
    assert all(row["median_us"] > 0 for row in report["enqueue"].values())
    [drain] = report["drain"]["mailrouter"]
    assert drain["received"] == drain["rows"] == 40
    crash = report["crash"]["mailrouter"]
    assert crash["duplicates"] == 0 and crash["lost"] == 0
    assert set(crash["statuses"]) <= {"sent", "uncertain"}
