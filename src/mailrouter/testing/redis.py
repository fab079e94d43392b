"""A throw-away ``redis-server`` on 127.0.0.1, for tests, benchmarks and demos
of fleet-wide health (``health['cache']`` on Django's ``RedisCache``).

The server keeps nothing on disk and is killed by ``stop()``. Needs the
``redis-server`` binary; ``flush()`` and ``client()`` need the ``redis``
package (``pip install django-mailrouter[redis]``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from types import TracebackType
from typing import Any, Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_cache_settings(url: str) -> dict[str, Any]:
    """A ``CACHES`` entry for Django's ``RedisCache`` at ``url``, with short
    socket timeouts so a hanging server cannot hang sends (check ``W104``)."""
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, without persistence."""

    def __init__(self, binary: str | None = None, *, port: int | None = None) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = found
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cache_settings(self) -> dict[str, Any]:
        """A ``CACHES`` entry for Django's ``RedisCache`` on this server."""
        return redis_cache_settings(self.url)

    def start(self, timeout: float = 10) -> Self:
        """Start the server and wait until it answers ``PING``."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
            self._client = None

    def client(self) -> Any:
        """This object's ``redis.Redis`` client of the server (one connection,
        so counting commands does not count its handshakes)."""
        if self._client is None:
            import redis

            self._client = redis.Redis(port=self.port)
        return self._client

    def flush(self) -> None:
        """Delete every key."""
        self.client().flushall()

    def commands(self) -> dict[str, int]:
        """Calls per command since the last ``CONFIG RESETSTAT`` (``INFO
        commandstats``), leaving out the ones this class makes itself."""
        stats = self.client().info("commandstats")
        return {
            name.removeprefix("cmdstat_"): values["calls"]
            for name, values in stats.items()
            if name not in ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_flushall")
        }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
