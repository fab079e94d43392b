"""A fake ESP status page server, to rehearse status page routing locally.

:class:`StatusPageServer` is a real HTTP server on ``127.0.0.1`` (a free port
by default) answering GETs from :attr:`StatusPageServer.pages` (path →
:class:`Page`), which tests and demos change while it runs. It counts
requests per path. The builders return documents shaped like the vendors'
own answers, at the vendors' own paths, so one server can stand for all of
them at once (:func:`rehearsal_pages`):

* :func:`statuspage` -- Atlassian Statuspage v2 ``/api/v2/summary.json``
  (Mailgun, SendGrid, Mailjet, Brevo, SparkPost, Resend, Mailtrap);
* :func:`sorry` (with :func:`notice`) -- a Sorry™-hosted page's
  ``/api/v1/status``, ``/components`` and ``/notices`` (Postmark today), and
  :func:`postmark_legacy` -- Postmark's former ``/api/1.0/services``;
* :func:`aws_health` (with :func:`aws_event`) -- AWS's
  ``/public/currentevents``, UTF-16 encoded like the real one.

Point a page at it with ``server.url(path)`` and ``"allow_http": True``.
Faults: HTML, HTTP errors, slow or held answers, huge bodies, redirects,
ETag/304 (see :class:`Page`). Standard library only.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = [
    "CURRENT_EVENTS", "SERVICES", "SORRY_COMPONENTS", "SORRY_NOTICES", "SORRY_STATUS", "SUMMARY",
    "Page", "StatusPageServer", "aws_event", "aws_health", "notice", "postmark",
    "postmark_legacy", "rehearsal_pages", "sorry", "statuspage",
]

SUMMARY = "/api/v2/summary.json"
#: Postmark's former services list.
SERVICES = "/api/1.0/services"
SORRY_STATUS = "/api/v1/status"
SORRY_COMPONENTS = "/api/v1/components"
SORRY_NOTICES = "/api/v1/notices"
CURRENT_EVENTS = "/public/currentevents"

#: The legacy Postmark services: path slug → name (as Postmark listed them).
LEGACY_POSTMARK_NAMES = {
    "api": "API Response Time",
    "smtp": "SMTP Response Time",
    "web": "Web Response Time",
    "inbound": "Inbound SMTP Response Time",
}
#: What AWS's dashboard calls a few regions in ``region_name``.
AWS_REGION_NAMES = {"us-east-1": "N. Virginia", "eu-west-1": "Ireland",
                    "eu-central-1": "Frankfurt", "us-west-2": "Oregon"}
SES_NAME = "Amazon Simple Email Service"
SES_SLUG = "ses"


@dataclass
class Page:
    """One answer: body, status, content type, and fault knobs."""

    body: bytes = b"{}"
    #: The HTTP status (e.g. 500; 301 with ``location``).
    status: int = 200
    content_type: str = "application/json"
    #: Send an ``ETag`` and answer a matching ``If-None-Match`` with 304.
    etag: bool = True
    #: Seconds to wait before answering.
    delay: float = 0.0
    #: Held until set: a status host that hangs.
    hold: threading.Event | None = None
    #: A redirect target (with a 3xx ``status``).
    location: str | None = None
    #: Extra response headers.
    headers: Mapping[str, str] = field(default_factory=dict)


def _json(document: Any) -> Page:
    return Page(json.dumps(document).encode())


def statuspage(components: Mapping[str, str] | None = None, indicator: str = "none",
               groups: Mapping[str, Mapping[str, str]] | None = None) -> Page:
    """A Statuspage v2 summary: top-level components (name → status such as
    ``operational`` / ``major_outage``), and groups of children."""
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
    return _json(document)


def postmark(services: Mapping[str, str], wrapped: bool = False) -> Page:
    """A services list of name → UP / MAINTENANCE / DELAY / DEGRADED / DOWN."""
    items = [{"name": name, "status": status} for name, status in services.items()]
    return _json({"services": items} if wrapped else items)


def postmark_legacy(statuses: Mapping[str, str]) -> Page:
    """Postmark's former ``/api/1.0/services``: slug (``api``, ``smtp``, ``web``,
    ``inbound``) → status, named and pathed as Postmark did."""
    return _json([{"status": status, "url": f"/services/{slug}",
                   "name": LEGACY_POSTMARK_NAMES.get(slug, slug)}
                  for slug, status in statuses.items()])


def notice(subject: str, type: str = "unplanned", *, ended: bool = False,
           components: Iterable[int] = (), state: str | None = None) -> dict[str, Any]:
    """A Sorry notice; ``components``: ids of the components it names."""
    ended_at = "2026-01-01T10:30:00Z" if ended else None
    default_state = "resolved" if ended else ("underway" if type == "planned" else "identified")
    return {"id": zlib.crc32(subject.encode()) % 100000, "type": type, "subject": subject,
            "state": state or default_state, "url": "https://status.example.com/notices/1",
            "began_at": "2026-01-01T10:00:00Z", "ended_at": ended_at,
            "created_at": "2026-01-01T10:00:00Z", "updated_at": "2026-01-01T10:05:00Z",
            "components": [{"id": number} for number in components]}


def sorry(components: Mapping[str, str] | None = None, state: str = "operational",
          children: Mapping[str, Mapping[str, str]] | None = None,
          notices: Iterable[Mapping[str, Any]] = (), root: str = "") -> dict[str, Page]:
    """A Sorry-hosted page's three documents (path → :class:`Page`, under
    ``root``): top-level ``components`` (name → ``operational`` / ``degraded``
    / ``maintenance`` / ``outage``) with ids 1, 2, ... in order, ``children``
    (parent name → children), the page ``state`` and ``notices``."""
    items: list[dict[str, Any]] = []
    ids: dict[str, int] = {}
    for name, component_state in (components or {}).items():
        ids[name] = len(items) + 1
        items.append({"id": ids[name], "name": name, "state": component_state,
                      "parent_id": None, "position": len(items)})
    for parent, kids in (children or {}).items():
        for name, component_state in kids.items():
            items.append({"id": len(items) + 1, "name": name, "state": component_state,
                          "parent_id": ids[parent], "position": len(items)})
    state_text = {"operational": "All systems operational"}.get(state, state.capitalize())
    return {
        root + SORRY_STATUS: _json({"page": {"state": state, "state_text": state_text}}),
        root + SORRY_COMPONENTS: _json({"components": items}),
        root + SORRY_NOTICES: _json({"notices": list(notices)}),
    }


def aws_event(service: str = SES_SLUG, region: str = "us-east-1", status: str = "1",
              summary: str = "Increased error rates", service_name: str = SES_NAME,
              ) -> dict[str, Any]:
    """One AWS current event for ``service`` (a slug such as ``ses``) in ``region``."""
    return {
        "date": "1767261600", "arn": f"arn:aws:health:{region}::event/{service.upper()}/"
        f"AWS_{service.upper()}_OPERATIONAL_ISSUE/AWS_{service.upper()}_OPERATIONAL_ISSUE_1",
        "service": f"{service}-{region}", "service_name": service_name,
        "region_name": AWS_REGION_NAMES.get(region, region), "status": status,
        "summary": summary, "event_log": [{"summary": summary, "message": summary,
                                          "status": int(status), "timestamp": 1767261600}],
    }


def aws_health(events: Iterable[Mapping[str, Any]] = (), encoding: str = "utf-16-be") -> Page:
    """AWS's current events list as AWS serves it: UTF-16 with a byte order
    mark (``utf-16-be`` / ``utf-16-le``), or ``utf-8``."""
    text = json.dumps(list(events))
    bom = {"utf-16-be": codecs.BOM_UTF16_BE, "utf-16-le": codecs.BOM_UTF16_LE}.get(encoding, b"")
    charset = "utf-16" if bom else "utf-8"
    return Page(bom + text.encode(encoding), content_type=f"application/json;charset={charset}")


def rehearsal_pages(root: str = "") -> dict[str, Page]:
    """Healthy pages of all three shapes at their vendors' paths: a Statuspage
    summary, a Sorry page (Postmark's components) and AWS's current events."""
    return {
        root + SUMMARY: statuspage({"API": "operational", "Outbound Delivery": "operational"}),
        **sorry({"API": "operational", "SMTP": "operational", "Web App": "operational",
                 "Inbound": "operational"}, root=root),
        root + CURRENT_EVENTS: aws_health([]),
    }


class StatusPageServer:
    """A local HTTP server answering GETs from :attr:`pages` (path → Page).

    ``StatusPageServer()`` binds ``127.0.0.1`` on a free port; ``pages``
    preloads answers (e.g. :func:`rehearsal_pages`). A context manager;
    :meth:`start` / :meth:`stop` also work.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 pages: Mapping[str, Page] | None = None) -> None:
        #: Path (with query) → the answer; change it while the server runs.
        self.pages: dict[str, Page] = dict(pages or {})
        self.hits: Counter[str] = Counter()
        self.hit_times: dict[str, list[float]] = {}
        self.not_modified: Counter[str] = Counter()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body are separate writes: without this, Nagle and
            # delayed ACKs add ~40 ms to every answer.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                server._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path
        page = self.pages.get(path)
        self.hits[path] += 1
        self.hit_times.setdefault(path, []).append(time.monotonic())
        if page is None:
            _send(request, 404, b"no such page", "text/plain")
            return
        if page.hold is not None:
            page.hold.wait(30)
        if page.delay:
            time.sleep(page.delay)
        if page.location is not None:
            request.send_response(page.status)
            request.send_header("Location", page.location)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        etag = f'"{hashlib.sha256(page.body).hexdigest()[:16]}"' if page.etag else None
        if etag is not None and request.headers.get("If-None-Match") == etag:
            self.not_modified[path] += 1
            request.send_response(304)
            request.send_header("ETag", etag)
            request.end_headers()
            return
        _send(request, page.status, page.body, page.content_type, etag, page.headers)

    def url(self, path: str = "", host: str | None = None) -> str:
        """``http://host:port`` + ``path``: the URL to configure a page with."""
        return f"http://{host or self.host}:{self.port}{path}"

    def start(self) -> Self:
        """Serve in a background daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held answers, stop serving and close the socket."""
        for page in self.pages.values():
            if page.hold is not None:
                page.hold.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str,
          etag: str | None = None, headers: Mapping[str, str] | None = None) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    if etag is not None:
        request.send_header("ETag", etag)
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    with contextlib.suppress(OSError):  # the client gave up (size cap, timeout)
        request.wfile.write(body)
