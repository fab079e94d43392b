"""A real local HTTP server serving ESP status documents, changed live.

``StatusPageServer`` answers GETs from ``pages`` (path → :class:`Page`):
Statuspage v2 ``summary.json`` and Postmark ``services`` documents built by
``statuspage()`` / ``postmark()``, HTML, HTTP errors, slow or held answers,
huge bodies, redirects, and ETag/304. It counts requests per path. Used by
the suite and by ``python -m mailrouter.testing statuspage``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SUMMARY = "/api/v2/summary.json"
SERVICES = "/api/1.0/services"


@dataclass
class Page:
    body: bytes = b"{}"
    status: int = 200
    content_type: str = "application/json"
    etag: bool = True
    delay: float = 0.0
    #: Held until set: a status host that hangs.
    hold: threading.Event | None = None
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def statuspage(components: Mapping[str, str] | None = None, indicator: str = "none",
               groups: Mapping[str, Mapping[str, str]] | None = None) -> Page:
    """A Statuspage v2 summary: top-level components, and groups of children."""
    items: list[dict[str, Any]] = []
    for number, (name, status) in enumerate((components or {}).items()):
        items.append({"id": f"c{number}", "name": name, "status": status, "group": False,
                      "group_id": None})
    for number, (group, children) in enumerate((groups or {}).items()):
        worst = "major_outage" if "major_outage" in children.values() else "operational"
        items.append({"id": f"g{number}", "name": group, "status": worst, "group": True,
                      "group_id": None, "components": []})
        for child_number, (name, status) in enumerate(children.items()):
            items.append({"id": f"g{number}c{child_number}", "name": name, "status": status,
                          "group": False, "group_id": f"g{number}"})
    document = {"page": {"id": "p1", "name": "ESP"}, "components": items, "incidents": [],
                "status": {"indicator": indicator, "description": "..."}}
    return Page(json.dumps(document).encode())


def postmark(services: Mapping[str, str], wrapped: bool = False) -> Page:
    items = [{"name": name, "status": status} for name, status in services.items()]
    document: Any = {"services": items} if wrapped else items
    return Page(json.dumps(document).encode())


class StatusPageServer:
    """Serves ``pages`` on ``host``:``port`` (0: a free port, in ``port``)
    from a background thread; a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.pages: dict[str, Page] = {}
        self.hits: Counter[str] = Counter()
        self.hit_times: dict[str, list[float]] = {}
        self.not_modified: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body are separate writes: without this, Nagle and
            # delayed ACKs add ~40 ms to every answer.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                path = self.path
                page = server.pages.get(path)
                server.hits[path] += 1
                server.hit_times.setdefault(path, []).append(time.monotonic())
                if page is None:
                    self._answer(404, b"no such page", "text/plain")
                    return
                if page.hold is not None:
                    page.hold.wait(30)
                if page.delay:
                    time.sleep(page.delay)
                if page.location is not None:
                    self.send_response(page.status)
                    self.send_header("Location", page.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = f'"{hashlib.sha256(page.body).hexdigest()[:16]}"' if page.etag else None
                if etag is not None and self.headers.get("If-None-Match") == etag:
                    server.not_modified[path] += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self._answer(page.status, page.body, page.content_type, etag)

            def _answer(self, status: int, body: bytes, content_type: str,
                        etag: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if etag is not None:
                    self.send_header("ETag", etag)
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up (size cap, timeout)
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> StatusPageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        for page in self.pages.values():
            if page.hold is not None:
                page.hold.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StatusPageServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
