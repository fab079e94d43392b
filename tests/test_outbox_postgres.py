"""Real worker processes drain a real PostgreSQL outbox into real local SMTP
and fake ESP servers.

- Several ``manage.py mailrouter outbox-worker`` processes drain thousands of
  rows: every row ends sent, and no server receives a Message-ID twice.
- Crash test: workers are killed with SIGKILL at random moments during a
  drain and replaced: nothing is lost, nothing is sent twice, and every
  ``uncertain`` row was being sent by a worker that was killed. Crash tests
  run on a durable server (fsync and synchronous commits on, as the outbox
  requires); the others on a fast one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailrouter.testing import FakeESPServer, FaultySMTPServer
from mailrouter.testing.redis import RedisServer

from .health_fixtures import redis_binary
from .postgres_fixtures import PostgresServer, wait_until

ROOT = Path(__file__).resolve().parent.parent
PENDING = ("queued", "claimed", "sending")


class Fleet:
    """Worker processes sharing one PostgreSQL outbox and two mail servers."""

    def __init__(
        self, postgres: PostgresServer, name: str, lease: float, esp_latency: float,
        **extra: Any,
    ) -> None:
        postgres.create_database(name)
        self.postgres = postgres
        self.smtp = FaultySMTPServer().start()
        self.esp = FakeESPServer(latency=esp_latency).start()
        config = {"database": name, "pg_port": postgres.port, "smtp_port": self.smtp.port,
                  "esp_url": self.esp.mailgun_api_url, "lease": lease, **extra}
        self.env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
                    "DJANGO_SETTINGS_MODULE": "tests.outbox_process_settings",
                    "MAILROUTER_OUTBOX_TEST": json.dumps(config)}
        self.dsn = postgres.dsn(name)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()

    def _run(self, *args: str) -> None:
        subprocess.run([sys.executable, *args], env=self.env, cwd=ROOT, check=True, timeout=300)

    def enqueue(self, count: int) -> None:
        """Migrate the database, then store ``count`` messages."""
        self._run("-m", "tests.outbox_enqueue", str(count))

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        return self.start("-m", "django", "mailrouter", "outbox-worker", *args)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, *args],
            env=self.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.workers.append(process)
        return process

    def rows(self) -> list[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.dsn, row_factory=dict_row) as conn:
            return list(conn.execute(
                "SELECT id, status, message_id, claimed_by, delivery_count, sent_using "
                "FROM mailrouter_outbox_outboxmessage"
            ))

    def setting(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(f"SHOW {name}").fetchone()
        assert row is not None
        return str(row[0])

    def sending_pids(self) -> list[int]:
        return [pid_of(row["claimed_by"]) for row in self.rows() if row["status"] == "sending"]

    def statuses(self) -> Counter[str]:
        return Counter(row["status"] for row in self.rows())

    def received_ids(self) -> Counter[str | None]:
        ids: Counter[str | None] = Counter(m.message_id for m in self.smtp.messages)
        ids.update(m.message_id for m in self.esp.messages)
        return ids

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self.smtp.stop()
        self.esp.stop()


@pytest.fixture
def fleet(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    fleets: list[Fleet] = []

    def make(
        lease: float = 300, esp_latency: float = 0.0, *, durable: bool = False, **extra: Any
    ) -> Fleet:
        name = f"outbox_{request.node.name.lower()[:40]}_{len(fleets)}"
        server = request.getfixturevalue("durable_postgres") if durable else postgres
        made = Fleet(server, name, lease, esp_latency, **extra)
        fleets.append(made)
        return made

    yield make
    for made in fleets:
        made.close()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer(redis_binary())
    server.start()
    yield server
    server.stop()


def pid_of(holder: str) -> int:
    return int(holder.split(":")[1])


def test_several_workers_drain_thousands_of_rows_each_sent_once(fleet: Any) -> None:
    outbox: Fleet = fleet()
    outbox.enqueue(1000)
    workers = [outbox.start_worker("--once", "--batch", "10", "--concurrency", "2")
               for _ in range(4)]
    for process in workers:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err.decode(errors="replace")
    rows = outbox.rows()
    assert Counter(row["status"] for row in rows) == {"sent": 1000}
    received = outbox.received_ids()
    assert all(count == 1 for count in received.values()), "a Message-ID was received twice"
    assert set(received) == {row["message_id"] for row in rows}
    assert len(outbox.esp.messages) == 334
    assert {row["sent_using"] for row in rows} == {"smtp", "mailgun"}
    # Work was shared: more than one process delivered rows.
    assert len({pid_of(row["claimed_by"]) for row in rows}) > 1


def test_sigkilled_workers_lose_nothing_and_send_nothing_twice(fleet: Any) -> None:
    # A 50 ms ESP: a third of the rows keep a worker busy mid-send for a while,
    # so kills land before, during and after sends.
    outbox: Fleet = fleet(lease=2.0, esp_latency=0.05, durable=True)
    assert (outbox.setting("fsync"), outbox.setting("synchronous_commit")) == ("on", "on")
    outbox.enqueue(400)
    rng = random.Random(1234)
    args = ("--batch", "5", "--poll-interval", "0.1")
    for _ in range(3):
        outbox.start_worker(*args)
    # The schedule starts once the drain has: kills during start-up prove little.
    wait_until(lambda: bool(outbox.smtp.messages or outbox.esp.messages), 120,
               "the first message to arrive")
    kills = 0
    deadline = time.monotonic() + 120
    while kills < 8 and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.8))
        if not any(outbox.statuses()[status] for status in ("queued", "claimed")):
            break
        alive = {p.pid: p for p in outbox.workers if p.poll() is None}
        # Every other kill aims at a worker that has a row in "sending".
        sending = [pid for pid in outbox.sending_pids() if pid in alive] if kills % 2 else []
        victim = alive[sending[0]] if sending else rng.choice(list(alive.values()))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        outbox.killed.add(victim.pid)
        kills += 1
        outbox.start_worker(*args)
    assert kills >= 3, "the drain ended before the workers could be killed"
    wait_until(lambda: not any(outbox.statuses()[s] for s in PENDING), 120,
               "every row to end (killed workers' leases to expire)")
    for process in outbox.workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            assert process.returncode == 0
    rows = outbox.rows()
    statuses = Counter(row["status"] for row in rows)
    assert set(statuses) <= {"sent", "uncertain"} and sum(statuses.values()) == 400
    received = outbox.received_ids()
    assert all(count == 1 for count in received.values()), "a Message-ID was received twice"
    for row in rows:
        if row["status"] == "sent":
            assert received[row["message_id"]] == 1
        else:
            # Started by a worker that was killed; received at most once.
            assert pid_of(row["claimed_by"]) in outbox.killed
            assert received[row["message_id"]] <= 1
    assert set(received) <= {row["message_id"] for row in rows}


def test_a_worker_killed_mid_send_leaves_its_row_uncertain_never_resent(fleet: Any) -> None:
    # The ESP takes a minute to answer: the worker is certainly mid-send.
    outbox: Fleet = fleet(lease=1.0, esp_latency=60, durable=True)
    outbox.enqueue(1)  # message 0 goes to the ESP
    first = outbox.start_worker("--poll-interval", "0.1")
    wait_until(lambda: bool(outbox.sending_pids()), 60, "the worker to start sending")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    second = outbox.start_worker("--poll-interval", "0.1")
    wait_until(lambda: outbox.statuses() == {"uncertain": 1}, 60,
               "the row to become uncertain after the lease")
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err.decode(errors="replace")
    (row,) = outbox.rows()
    assert pid_of(row["claimed_by"]) == first.pid
    assert row["delivery_count"] == 1  # the second worker never tried it


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode(errors="replace")[-3000:]


def assert_all_sent_once(outbox: Fleet, count: int) -> None:
    rows = outbox.rows()
    assert Counter(row["status"] for row in rows) == {"sent": count}
    received = outbox.received_ids()
    assert all(n == 1 for n in received.values()), "a Message-ID was received twice"
    assert set(received) == {row["message_id"] for row in rows}


def test_each_commit_wakes_a_real_django_tasks_db_worker(fleet: Any) -> None:
    outbox: Fleet = fleet(tasks="db")
    outbox.enqueue(300)  # 2 commits, 2 deliver_outbox tasks
    worker = outbox.start("-m", "django", "db_worker", "--interval", "0.1",
                          "--no-startup-delay")
    wait_until(lambda: outbox.statuses() == {"sent": 300}, 120, "the task worker to deliver")
    stop(worker)
    assert_all_sent_once(outbox, 300)


def test_a_real_celery_worker_delivers_and_a_duplicate_task_sends_nothing_twice(
    fleet: Any, redis: RedisServer
) -> None:
    outbox: Fleet = fleet(celery_broker=redis.url)
    outbox.enqueue(300)
    worker = outbox.start("-m", "celery", "-A", "tests.outbox_celery_app", "worker",
                          "--pool", "threads", "--concurrency", "2", "--loglevel", "WARNING")
    from celery import Celery

    app = Celery(broker=redis.url, backend=redis.url)
    # The same task delivered twice (and run concurrently) sends each row once.
    results = [app.send_task("mailrouter.outbox.deliver_outbox") for _ in range(2)]
    delivered = [result.get(timeout=120) for result in results]
    assert sum(counts.get("sent", 0) for counts in delivered) == 300
    stop(worker)
    assert_all_sent_once(outbox, 300)


# -- Claims: paused workers, a lost database connection, at-least-once -------------------


def start_paused_worker(outbox: Fleet) -> subprocess.Popen[bytes]:
    """A worker that stops itself (SIGSTOP) just before its first request:
    after its "sending" mark and Anymail's pre_send."""
    env, outbox.env = outbox.env, {**outbox.env, "MAILROUTER_OUTBOX_PAUSE": "1"}
    try:
        worker = outbox.start_worker("--poll-interval", "0.1")
    finally:
        outbox.env = env
    wait_until(lambda: process_state(worker.pid) == "T", 60, "the worker to stop itself")
    return worker


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_worker_paused_past_its_lease_resumes_and_sends_nothing(fleet: Any) -> None:
    outbox: Fleet = fleet(lease=1.0)
    outbox.enqueue(1)  # message 0 goes to the ESP
    first = start_paused_worker(outbox)
    time.sleep(1.5)  # past its lease
    second = outbox.start_worker("--poll-interval", "0.1")
    wait_until(lambda: outbox.statuses() == {"uncertain": 1}, 60,
               "the second worker to mark the row uncertain")
    # The operator checked: the ESP has nothing. Queued again, the second worker sends it.
    (row,) = outbox.rows()
    outbox._run("-m", "django", "mailrouter", "outbox", "retry", "--uncertain", str(row["id"]),
                "--no-input")
    wait_until(lambda: outbox.statuses() == {"sent": 1}, 60, "the second worker to send it")
    first.send_signal(signal.SIGCONT)
    stop(second)
    # The first worker resumes at its request: its claim check refuses it.
    wait_until(lambda: process_state(first.pid) != "T", 10, "the first worker to resume")
    time.sleep(1.0)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err.decode(errors="replace")[-3000:]
    assert "claim ended before the request" in err.decode(errors="replace")
    assert outbox.received_ids() == {row["message_id"]: 1}
    (row,) = outbox.rows()
    assert (row["status"], row["delivery_count"], pid_of(row["claimed_by"])) == (
        "sent", 2, second.pid
    )


def test_an_outcome_write_on_a_terminated_connection_lands_after_reconnecting(
    fleet: Any,
) -> None:
    import psycopg

    # The ESP takes 3 s: the worker's connection is idle, its request in flight.
    outbox: Fleet = fleet(esp_latency=3.0)
    outbox.enqueue(2)
    worker = outbox.start_worker("--poll-interval", "0.1", "--batch", "1")
    wait_until(lambda: outbox.statuses()["sending"] == 1, 60, "the worker to start sending")
    time.sleep(0.5)  # its claim check (just before the request) is done
    with psycopg.connect(outbox.dsn, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    assert killed == [(True,)]
    wait_until(lambda: outbox.statuses() == {"sent": 2}, 60, "both rows to be sent")
    stop(worker)
    assert_all_sent_once(outbox, 2)


def test_at_least_once_retries_a_row_whose_worker_was_killed_before_its_request(
    fleet: Any,
) -> None:
    outbox: Fleet = fleet(lease=1.0, delivery="at_least_once")
    outbox.enqueue(1)
    first = start_paused_worker(outbox)  # after its "sending" mark
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    second = outbox.start_worker("--poll-interval", "0.1")
    wait_until(lambda: outbox.statuses() == {"sent": 1}, 60,
               "the row to be retried after the lease (at-least-once)")
    stop(second)
    assert_all_sent_once(outbox, 1)
    (row,) = outbox.rows()
    assert (row["delivery_count"], pid_of(row["claimed_by"])) == (2, second.pid)
