"""The fake status page server and document builders, for the suite's tests:
they live in :mod:`mailrouter.testing.statuspage` (public, so users can
rehearse status pages too)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from mailrouter.testing.statuspage import *  # noqa: F403
from mailrouter.testing.statuspage import SUMMARY, StatusPageServer, statuspage
from mailrouter.testing.statuspage import __all__ as _public

# The suite's hostile hosts (below) are not for rehearsals, so not in the module.
__all__ = [*_public, "TricklingServer", "operational_api_page"]


class TricklingServer:
    """A hostile status host: answers every connection one byte every
    ``interval`` seconds, for ever (``phase``: ``"headers"`` trickles the status
    line and headers, ``"body"`` sends the headers at once, then the body,
    ``"tls"`` trickles a TLS handshake record to an https client)."""

    def __init__(self, phase: str = "body", interval: float = 0.5) -> None:
        import socket

        self.phase = phase
        self.interval = interval
        self.connections = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, path: str = SUMMARY) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: Any) -> None:
        headers = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        headers += b"Content-Length: 100000\r\n\r\n"
        with conn:
            conn.recv(65536)
            try:
                if self.phase == "body":
                    conn.sendall(headers)
                    data = b" " * 100000
                elif self.phase == "tls":
                    # A TLS handshake record announcing 16 KiB, then its bytes.
                    data = b"\x16\x03\x03\x40\x00" + b"\x02" * 0x4000
                else:
                    data = headers
                for byte in data:
                    if self._stop.wait(self.interval):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up: what a deadline does

    def __enter__(self) -> TricklingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._listener.close()


def operational_api_page() -> Iterator[StatusPageServer]:
    """A running server whose summary says component "API" is operational
    (a generator: ``server = pytest.fixture(operational_api_page, name="server")``)."""
    with StatusPageServer() as running:
        running.pages[SUMMARY] = statuspage({"API": "operational"})
        yield running
