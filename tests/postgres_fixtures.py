"""A throw-away PostgreSQL server for the outbox tests (and benchmarks).

``initdb`` + ``pg_ctl`` on a free port under a temporary directory. By
default with fsync and synchronous commits off (the data is disposable, and
the drains run faster); ``durable=True`` keeps PostgreSQL's durable defaults,
which the outbox requires (docs/guides/outbox.md): crash tests run on those.
PostgreSQL refuses to run as root: when the suite runs as root, the server
runs as the ``postgres`` user (created by the Debian package that
scripts/test.sh installs). If PostgreSQL is missing
the tests FAIL with how to fix it, unless ``MAILROUTER_ALLOW_NO_POSTGRES=1``
is set, in which case they are skipped with that reason shown.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailrouter.testing.redis import free_port


def postgres_bin_dir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """``start()``, then connect to ``127.0.0.1:port`` as ``postgres`` (trust auth)."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mailrouter-pg-"))
        self.data = self.root / "data"
        self._demote: Callable[[], None] | None = None
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)

            def demote() -> None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

            self._demote = demote

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]], preexec_fn=self._demote,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.root, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed:\n{result.stdout.decode(errors='replace')}")

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200"
        )
        if self.durable:
            options += " -c fsync=on -c synchronous_commit=on -c full_page_writes=on"
        else:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"


def running_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A fixture body: a started server, stopped afterwards."""
    server = PostgresServer(require_postgres(), durable=durable).start()
    try:
        yield server
    finally:
        server.stop()


def require_postgres() -> Path:
    bin_dir = postgres_bin_dir()
    message = None
    if bin_dir is None:
        message = (
            "PostgreSQL is not installed: the outbox tests need a real server "
            "(apt-get install postgresql)."
        )
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            message = "the 'psycopg' package is not installed (pip install 'psycopg[binary]')."
    if message is not None:
        if os.environ.get("MAILROUTER_ALLOW_NO_POSTGRES") == "1":
            pytest.skip(message)
        pytest.fail(message + " Set MAILROUTER_ALLOW_NO_POSTGRES=1 to skip these tests.")
    assert bin_dir is not None
    return bin_dir


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
