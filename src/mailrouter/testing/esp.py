"""A fake, fault-injecting HTTP email-service-provider (ESP) API server.

Standard library only.  It speaks the send APIs used by django-anymail's real
Mailgun and Postmark backends, so those backends can be pointed at it with
their ``api_url`` option (see :attr:`FakeESPServer.mailgun_api_url` and
:attr:`FakeESPServer.postmark_api_url`):

* Mailgun: ``POST /v3/<domain>/messages`` (form-urlencoded, or multipart when
  there are attachments) -> ``200 {"id": "<...@domain>", "message": "Queued. Thank you."}``.
  Credentials: HTTP basic auth, user ``api``, password = API key.
* Postmark: ``POST /email`` and ``POST /email/withTemplate/`` (one JSON
  message) -> ``200 {"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}``;
  ``POST /email/batch`` (JSON list) and ``POST /email/batchWithTemplates``
  (``{"Messages": [...]}``) -> a JSON list of such objects.
  Credentials: ``X-Postmark-Server-Token`` header.
* Amazon SES v2 (boto3's ``sesv2`` client, as anymail's Amazon SES backend
  uses it): ``POST /v2/email/outbound-emails`` (JSON, raw MIME message in
  ``Content.Raw.Data``) -> ``200 {"MessageId": "..."}``; errors carry their
  AWS error code in ``__type`` (``TooManyRequestsException``, ...).
  Credentials: the access key id in the SigV4 ``Authorization`` header (the
  signature itself is not checked). Point the client at it with
  ``client_params={"endpoint_url": server.ses_endpoint_url}``.

The server is an :class:`http.server.ThreadingHTTPServer` speaking HTTP/1.1
with keep-alive, in a background daemon thread; every connection-handler
thread is tracked and joined by :meth:`FakeESPServer.stop`.

Fault model: exactly like :class:`~mailrouter.testing.FaultySMTPServer`, one
fault is resolved per *send request* (after routing, credential checks and
payload parsing succeeded; requests failing those are answered 404/401/400
without consuming anything): the schedule head if the schedule is non-empty,
else the base :attr:`FakeESPServer.mode`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.server
import itertools
import json
import os
import re
import select
import selectors
import socket
import socketserver
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from email.utils import getaddresses
from enum import StrEnum
from typing import Any, Self, cast
from urllib.parse import parse_qs

from ._base import FaultServer
from ._faults import FaultPlan

__all__ = ["ESPFault", "FakeESPServer", "ReceivedESPMessage", "ReceivedRequest"]


class ESPFault(StrEnum):
    """Fault modes of :class:`FakeESPServer` (plain strings are accepted too)."""

    #: Normal operation: 200 with the ESP's success body; message recorded.
    OK = "ok"
    #: 500 with an ESP-shaped JSON error body.
    ERROR_500 = "error_500"
    #: 503 with an ESP-shaped JSON error body.
    ERROR_503 = "error_503"
    #: 429 with an ESP-shaped JSON error body (plus ``Retry-After`` if
    #: :attr:`FakeESPServer.retry_after` is set).
    RATE_LIMITED_429 = "rate_limited_429"
    #: 400 with an ESP-shaped JSON error body.
    BAD_REQUEST_400 = "bad_request_400"
    #: 401 regardless of the credentials sent.
    UNAUTHORIZED_401 = "unauthorized_401"
    #: 403 with an ESP-shaped JSON error body.
    FORBIDDEN_403 = "forbidden_403"
    #: 422 with an ESP-shaped JSON error body (Postmark: ErrorCode 300, not
    #: recipient-related, so anymail raises an API error rather than
    #: treating it as refused recipients).
    UNPROCESSABLE_422 = "unprocessable_422"
    #: Read the request, then never reply until the client disconnects or the
    #: server stops.  Recorded in ``maybe_delivered``.
    READ_TIMEOUT = "read_timeout"
    #: 200 with a non-JSON (HTML) body.  Recorded in ``maybe_delivered``.
    GARBAGE_2XX = "garbage_2xx"
    #: Read the request, then close the connection without any response.
    #: Recorded in ``maybe_delivered``.
    DROP = "drop"
    #: Nothing listening (connection refused); switching away re-binds the same
    #: port.  Idle keep-alive connections are closed too.  Not schedulable.
    REFUSE = "refuse"
    #: 502 / 504 from a gateway in front of the ESP, which may have stored the
    #: message first.  Recorded in ``maybe_delivered``.
    BAD_GATEWAY_502 = "bad_gateway_502"
    GATEWAY_TIMEOUT_504 = "gateway_timeout_504"
    #: 200 with :attr:`FakeESPServer.odd_body` as JSON (default ``null``): a
    #: success status with a body no client expects.  Recorded in ``maybe_delivered``.
    ODD_2XX = "odd_2xx"
    #: Read the request, then break the TLS stream (raw bytes on the socket)
    #: instead of answering: the client's TLS layer fails while reading the
    #: response.  Only with ``tls=``; recorded in ``maybe_delivered``.
    TLS_BREAK = "tls_break"


# Faults after which the ESP may well have accepted the message, from the
# client's point of view: the request was fully transmitted but no usable
# answer came back.
_MAYBE_DELIVERED = frozenset(
    {
        ESPFault.READ_TIMEOUT,
        ESPFault.GARBAGE_2XX,
        ESPFault.DROP,
        ESPFault.BAD_GATEWAY_502,
        ESPFault.GATEWAY_TIMEOUT_504,
        ESPFault.ODD_2XX,
        ESPFault.TLS_BREAK,
    }
)

_MAILGUN_PATH = re.compile(r"^/v3/([^/]+)/messages/?$")
_POSTMARK_PATHS = {
    "/email": "single",
    "/email/withTemplate": "single",
    "/email/withTemplate/": "single",
    "/email/batch": "batch",
    "/email/batchWithTemplates": "batch_with_templates",
}

_SES_PATH = "/v2/email/outbound-emails"
_SES_BULK_PATH = "/v2/email/outbound-bulk-emails"
_SES_ACCOUNT_PATH = "/v2/email/account"
#: The AWS error code SES answers with, per HTTP status this server sends.
_SES_ERROR_TYPES = {
    400: "BadRequestException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "NotFoundException",
    405: "BadRequestException",
    422: "MessageRejected",
    429: "TooManyRequestsException",
    500: "InternalFailure",
    503: "ServiceUnavailable",
}

# Upper bound for accepted request bodies; anything larger is a client bug in
# the test suite, not something we want to buffer.
_MAX_BODY = 50 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedESPMessage:
    """One message received by :class:`FakeESPServer`.

    A Postmark batch request yields one record per message in the batch; all
    of them share ``raw_body``.

    * ``esp``: ``"mailgun"``, ``"postmark"`` or ``"ses"``.
    * ``path``: request path (for Mailgun it contains the sender domain).
    * ``to``/``cc``/``bcc``: addr-specs (display names dropped).
    * ``from_email``: the From value exactly as sent (may include a display name).
    * ``message_id``: value of the custom ``Message-ID`` header the backend
      sent (Mailgun ``h:Message-Id`` field, Postmark ``Headers`` entry, the
      raw MIME message's header for SES), stripped of surrounding whitespace, or ``None``.
    * ``esp_message_id``: the id this server assigned (the one returned to the
      client in ``ok`` mode; never returned in the other modes).
    * ``auth_header_present``: whether the request carried the ESP's credential
      header (``Authorization`` for Mailgun and SES, ``X-Postmark-Server-Token``
      for Postmark), valid or not.
    * ``payload``: the decoded message fields -- Mailgun: ``{field: [values]}``;
      Postmark: the message's JSON object; SES: the request's JSON object.
    """

    esp: str
    path: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    from_email: str
    subject: str
    message_id: str | None
    esp_message_id: str
    auth_header_present: bool
    raw_body: bytes = field(repr=False)
    payload: Mapping[str, Any] = field(repr=False, compare=False, hash=False)


#: Alias: the record is per message, but callers may think of it per request.
ReceivedRequest = ReceivedESPMessage


class _PayloadError(ValueError):
    """The request body could not be understood (answered with 400)."""


class _HTTPServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer whose handler threads are tracked by the owner."""

    # Re-binding the same port after ``refuse`` needs SO_REUSEADDR (TIME_WAIT),
    # but never SO_REUSEPORT, which would let two servers share a port.
    allow_reuse_address = True
    allow_reuse_port = False
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: FakeESPServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup we do
        # not need and which can be slow in sandboxes.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        sock = cast(socket.socket, request)
        thread = threading.Thread(
            target=self.owner._serve_connection,
            args=(self, sock, client_address),
            name=f"FakeESPServer:{self.server_port}:conn",
            daemon=True,
        )
        self.owner._register_connection(sock, thread)
        thread.start()


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 so requests' connection pool really reuses connections.
    protocol_version = "HTTP/1.1"
    server_version = "FakeESP/1.0"
    # Headers and body are separate writes: with Nagle's algorithm the body
    # waits for the client's delayed ACK (40 ms on Linux) on every response.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:  # (method name dictated by http.server)
        self.server.owner._handle_request(self)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST


class FakeESPServer(FaultServer[ESPFault, ReceivedESPMessage]):
    """Local fake Mailgun + Postmark API with runtime-switchable faults.

    Contract:

    * Binds ``host`` (default ``127.0.0.1``) and ``port`` (default 0 = any free
      port) on :meth:`start`; :attr:`port` holds the real port afterwards and
      is kept for the object's lifetime (``refuse`` and restarts re-bind it).
    * :meth:`stop` closes the listener and every connection (including ones
      held open by ``read_timeout``) and joins all server threads before
      returning, promptly.  Idempotent; the object is a context manager.
    * All public attributes and methods are thread-safe; collections are
      returned as snapshots.
    * One *transaction* is one send request (a Postmark batch counts once):
      :meth:`accept_n_then` serves the next ``n`` send requests in ``ok``
      mode, one :attr:`schedule` entry is consumed per send request, and
      :attr:`applied_modes` gets one entry per send request.
    * Setting :attr:`mode` to ``refuse`` closes the listener and idle
      keep-alive connections before returning.
    * ``api_key``: if set, Mailgun requests must use basic auth ``api:<key>``
      and Postmark requests ``X-Postmark-Server-Token: <key>``; otherwise 401
      (without consuming a schedule entry).  If ``None`` nothing is checked.
    * Only requests served in ``ok`` mode are recorded in :attr:`messages`;
      those served in ``read_timeout``/``garbage_2xx``/``drop`` are recorded in
      :attr:`maybe_delivered` (the ESP "may have accepted" them).
      :attr:`requests_seen` counts every HTTP request, failed ones included.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        mode: ESPFault | str = ESPFault.OK,
        retry_after: int | None = None,
        error_body: Any = None,
        tls: tuple[str, str] | None = None,
        latency: float = 0.0,
    ) -> None:
        self.host = host
        #: Seconds every API call takes after the request was read, before the
        #: mode applies (a real ESP's processing time; benchmarks use 0.05).
        self.latency = latency
        #: Real port once started (the requested one before that).
        self.port = port
        self.api_key = api_key
        #: Seconds sent in ``Retry-After`` with 429 responses (no header if None).
        self.retry_after = retry_after
        #: JSON body of error responses instead of the ESP-shaped default, e.g.
        #: ``{"ErrorCode": 405, "Message": "..."}`` for a Postmark account problem.
        self.error_body = error_body
        #: What SES GetAccount reports as ``SendingEnabled`` (False: paused).
        self.ses_sending_enabled = True
        #: Body of ``odd_2xx`` answers (JSON-encoded; ``None`` is ``null``).
        self.odd_body: Any = None
        #: Per item of a Postmark batch or an SES bulk send served in ``ok``
        #: mode: ``None`` (accepted) or the item's failure -- Postmark: a result
        #: object such as ``{"ErrorCode": 405, "Message": "..."}``; SES: a
        #: ``BulkEmailEntryResult`` status such as ``"ACCOUNT_THROTTLED"``.  Failed
        #: items are not recorded in ``messages``.  Missing entries: accepted.
        self.item_errors: list[Any] = []
        #: (certificate file, key file): serve HTTPS instead of HTTP.
        self.tls = tls
        self._tls_context: ssl.SSLContext | None = None
        if tls is not None:
            self._tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls_context.load_cert_chain(*tls)
        super().__init__(FaultPlan(ESPFault, mode, ESPFault.OK, frozenset({ESPFault.REFUSE})))
        self._maybe: list[ReceivedESPMessage] = []
        self._requests_seen = 0
        # Live connections: socket -> (handler thread, busy-with-a-request flag).
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._busy: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._wake: socket.socket | None = None
        self._running = False
        self._ids = itertools.count(1)
        # Handler thread id -> its TLS socket (for ``tls_break``).
        self._tls_sockets: dict[int, ssl.SSLSocket] = {}

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in background threads; return ``self``.

        ``RuntimeError`` if already running, ``OSError`` if the port cannot be
        bound.  May be called again after :meth:`stop` (same port).
        """
        with self._control:
            if self._running:
                raise RuntimeError("server already running")
            self._stopping.clear()
            self._open_listener()
            self._running = True
            if self._plan.mode is ESPFault.REFUSE:
                self._close_listener()
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and all connections and join every server thread.

        Idempotent.  Raises ``RuntimeError`` only if a thread failed to exit
        within ``timeout`` (a bug).
        """
        with self._control:
            if not self._running:
                return
            self._running = False
            self._stopping.set()
            self._close_listener()
        deadline = time.monotonic() + timeout
        # Not under _control: handler threads may need it to finish.
        with self._lock:
            conns = list(self._conns.items())
        for sock, _thread in conns:
            self._kill_socket(sock)
        stuck = []
        for _sock, thread in conns:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                stuck.append(thread.name)
        if stuck:
            raise RuntimeError(f"FakeESPServer threads did not stop: {stuck}")

    def _is_running(self) -> bool:
        return self._running

    def __repr__(self) -> str:
        return f"<FakeESPServer {self.host}:{self.port} mode={self.mode.value}>"

    # ------------------------------------------------------------------
    # URLs for anymail's ``api_url`` option
    # ------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def mailgun_api_url(self) -> str:
        """Value for anymail's Mailgun ``api_url`` option (``.../v3/``)."""
        return f"{self.base_url}/v3/"

    @property
    def postmark_api_url(self) -> str:
        """Value for anymail's Postmark ``api_url`` option (``.../``)."""
        return f"{self.base_url}/"

    @property
    def ses_endpoint_url(self) -> str:
        """``endpoint_url`` for boto3's ``sesv2`` client (anymail's Amazon SES
        backend: ``client_params={"endpoint_url": ...}``)."""
        return self.base_url

    # ------------------------------------------------------------------
    # Observations (messages, connections_opened, errors: see FaultServer)
    # ------------------------------------------------------------------

    @property
    def maybe_delivered(self) -> list[ReceivedESPMessage]:
        """Snapshot of messages served in ``read_timeout``/``garbage_2xx``/``drop``."""
        with self._lock:
            return list(self._maybe)

    @property
    def requests_seen(self) -> int:
        """Number of HTTP requests read so far, whatever their outcome."""
        with self._lock:
            return self._requests_seen

    def _reset_locked(self) -> None:
        self._maybe.clear()
        self._requests_seen = 0

    # ------------------------------------------------------------------
    # Listener management
    # ------------------------------------------------------------------

    def _open_listener(self) -> None:
        """Bind (retrying briefly on EADDRINUSE when re-binding) and serve."""
        deadline = time.monotonic() + 2.0
        while True:
            try:
                httpd = _HTTPServer((self.host, self.port), self)
                break
            except OSError:
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.port = int(httpd.server_address[1])
        # handle_request() below must only poll: we call it when the listener
        # is already readable.
        httpd.timeout = 0.0
        wake_r, wake_w = socket.socketpair()
        thread = threading.Thread(
            target=self._accept_loop,
            args=(httpd, wake_r),
            name=f"FakeESPServer:{self.port}",
            daemon=True,
        )
        self._httpd, self._serve_thread, self._wake = httpd, thread, wake_w
        thread.start()

    @staticmethod
    def _accept_loop(httpd: _HTTPServer, wake_r: socket.socket) -> None:
        # Instead of serve_forever(), whose shutdown() waits for a polling
        # interval, block on the listener *and* a wake-up socket: closing the
        # listener ("refuse", stop()) then takes microseconds, which matters
        # when a test suite starts hundreds of servers.
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(httpd.socket, selectors.EVENT_READ, "accept")
                selector.register(wake_r, selectors.EVENT_READ, "wake")
                while True:
                    events = selector.select()
                    if any(key.data == "wake" for key, _mask in events):
                        return
                    httpd.handle_request()  # accept + hand over to a thread
        finally:
            wake_r.close()

    def _close_listener(self) -> None:
        """Stop accepting and close the listening socket (caller holds _control)."""
        httpd, thread, wake = self._httpd, self._serve_thread, self._wake
        self._httpd = self._serve_thread = self._wake = None
        if httpd is not None and thread is not None and wake is not None:
            wake.send(b"x")
            thread.join()
            wake.close()
            httpd.server_close()
        # An idle keep-alive connection would let a pooled client keep talking
        # to a "down" server; close those.  Busy ones get "Connection: close".
        with self._lock:
            idle = [s for s in self._conns if s not in self._busy]
        for sock in idle:
            self._kill_socket(sock)

    def _sync_listener(self) -> None:
        if not self._running:
            return  # start() applies the mode
        if self._plan.mode is ESPFault.REFUSE:
            self._close_listener()
        elif self._httpd is None:
            self._open_listener()

    @staticmethod
    def _kill_socket(sock: socket.socket) -> None:
        # shutdown() (not close()) wakes a thread blocked reading the socket,
        # and the socket is closed by its own handler thread afterwards.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _register_connection(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._conns[sock] = thread
            self._connections_opened += 1

    def _serve_connection(
        self, httpd: _HTTPServer, sock: socket.socket, client_address: Any
    ) -> None:
        try:
            if self._stopping.is_set():
                return
            served: socket.socket = sock
            if self._tls_context is not None:
                tls_socket = self._tls_context.wrap_socket(sock, server_side=True)
                with self._lock:
                    self._tls_sockets[threading.get_ident()] = tls_socket
                served = tls_socket
            httpd.finish_request(served, client_address)
        except OSError:
            pass  # client went away
        except Exception as exc:  # record server bugs for tests
            self._record_error(exc)
        finally:
            with self._lock:
                self._conns.pop(sock, None)
                self._tls_sockets.pop(threading.get_ident(), None)
                self._busy.discard(sock)
            httpd.shutdown_request(sock)

    # ------------------------------------------------------------------
    # Request handling
    # ------------------------------------------------------------------

    def _handle_request(self, h: _Handler) -> None:
        sock = cast(socket.socket, h.connection)
        with self._lock:
            self._requests_seen += 1
            self._busy.add(sock)
        try:
            self._dispatch(h, sock)
        finally:
            with self._lock:
                self._busy.discard(sock)
            if self._plan.mode is ESPFault.REFUSE or self._stopping.is_set():
                h.close_connection = True

    def _read_body(self, h: _Handler) -> bytes | None:
        length_header = h.headers.get("Content-Length")
        if length_header is None:
            if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._read_chunked(h)
            return b""
        try:
            length = int(length_header)
        except ValueError:
            return None
        if length < 0 or length > _MAX_BODY:
            return None
        body = h.rfile.read(length)
        if len(body) != length:
            raise ConnectionError("client closed mid-body")
        return body

    @staticmethod
    def _read_chunked(h: _Handler) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = h.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                # Trailer section ends with an empty line.
                while h.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > _MAX_BODY:
                return None
            chunks.append(h.rfile.read(size))
            h.rfile.readline(1024)

    def _dispatch(self, h: _Handler, sock: socket.socket) -> None:
        body = self._read_body(h)
        path = h.path.split("?", 1)[0]
        mailgun = _MAILGUN_PATH.match(path)
        if mailgun is not None:
            esp = "mailgun"
        elif path in _POSTMARK_PATHS:
            esp = "postmark"
        elif path in (_SES_PATH, _SES_BULK_PATH):
            esp = "ses"
        elif path == _SES_ACCOUNT_PATH and h.command == "GET":
            self._ses_account(h)
            return
        else:
            self._send_json(h, 404, {"message": f"Not found: {path}", "ErrorCode": 404})
            return
        if h.command != "POST":
            self._send_json(h, 405, self._error_body(esp, 405, "Method not allowed"))
            return
        if body is None:
            self._send_json(h, 400, self._error_body(esp, 400, "Malformed request body"))
            h.close_connection = True  # framing is unreliable now
            return
        auth_present, auth_ok = self._check_auth(h, esp)
        if not auth_ok:
            self._send_json(h, 401, self._error_body(esp, 401))
            return
        try:
            if mailgun is not None:
                records = self._parse_mailgun(h, path, mailgun.group(1), body, auth_present)
            elif esp == "ses":
                records = (
                    self._parse_ses_bulk(path, body, auth_present)
                    if path == _SES_BULK_PATH
                    else self._parse_ses(path, body, auth_present)
                )
            else:
                records = self._parse_postmark(path, body, auth_present)
        except _PayloadError as exc:
            self._send_json(h, 400, self._error_body(esp, 400, str(exc)))
            return
        mode, switched = self._plan.next_transaction()
        if switched is ESPFault.REFUSE:
            # accept_n_then(n, "refuse") just ran out: stop listening now; this
            # request is still served normally.
            with self._control:
                if self._running and self._plan.mode is ESPFault.REFUSE:
                    self._close_listener()
        if self.latency > 0:
            self._stopping.wait(self.latency)
        self._apply(h, sock, esp, path, mode, records)

    def _apply(
        self,
        h: _Handler,
        sock: socket.socket,
        esp: str,
        path: str,
        mode: ESPFault,
        records: list[ReceivedESPMessage],
    ) -> None:
        if mode in _MAYBE_DELIVERED:
            with self._lock:
                self._maybe.extend(records)
        if mode is ESPFault.OK:
            errors = [*self.item_errors[: len(records)]]
            errors += [None] * (len(records) - len(errors))
            self._record_messages([r for r, e in zip(records, errors, strict=True) if e is None])
            self._send_json(h, 200, self._success_body(esp, path, records, errors))
        elif mode is ESPFault.ODD_2XX:
            self._send_json(h, 200, self.odd_body)
        elif mode is ESPFault.TLS_BREAK:
            with self._lock:
                tls_socket = self._tls_sockets.get(threading.get_ident())
            if tls_socket is not None:
                # Bytes that are no TLS record, under the TLS layer.
                os.write(tls_socket.fileno(), b"HTTP/1.1 200 OK\r\n\r\nnot TLS" * 4)
            h.close_connection = True
        elif mode is ESPFault.GARBAGE_2XX:
            self._send(
                h,
                200,
                b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>",
                "text/html",
            )
        elif mode is ESPFault.DROP or mode is ESPFault.REFUSE:
            # REFUSE can only be resolved here via a race with the listener
            # closing; behave as if the server died under the request.
            h.close_connection = True
        elif mode is ESPFault.READ_TIMEOUT:
            self._hold(sock)
            h.close_connection = True
        else:
            status = {
                ESPFault.ERROR_500: 500,
                ESPFault.ERROR_503: 503,
                ESPFault.RATE_LIMITED_429: 429,
                ESPFault.BAD_REQUEST_400: 400,
                ESPFault.UNAUTHORIZED_401: 401,
                ESPFault.FORBIDDEN_403: 403,
                ESPFault.UNPROCESSABLE_422: 422,
                ESPFault.BAD_GATEWAY_502: 502,
                ESPFault.GATEWAY_TIMEOUT_504: 504,
            }[mode]
            headers = {}
            if status == 429 and self.retry_after is not None:
                headers["Retry-After"] = str(self.retry_after)
            body = self.error_body if self.error_body is not None else self._error_body(esp, status)
            self._send_json(h, status, body, headers)

    def _hold(self, sock: socket.socket) -> None:
        """Wait without replying until the client disconnects or we stop."""
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select([sock], [], [], 0.05)
                if readable and not sock.recv(1, socket.MSG_PEEK):
                    return  # orderly EOF from the client (or our own shutdown)
            except (OSError, ValueError):
                return  # reset, or the socket was closed under us
            if readable:
                # The client sent more bytes without waiting for a reply; do
                # not spin on them.
                self._stopping.wait(0.05)

    def _check_auth(self, h: _Handler, esp: str) -> tuple[bool, bool]:
        """Return (credential header present, credentials acceptable)."""
        if esp == "mailgun":
            header = h.headers.get("Authorization")
            present = header is not None
            if self.api_key is None:
                return present, True
            if header is None or not header.startswith("Basic "):
                return present, False
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return present, False
            return present, decoded == f"api:{self.api_key}"
        if esp == "ses":
            header = h.headers.get("Authorization") or ""
            credential = re.search(r"Credential=([^/,\s]+)/", header)
            present = credential is not None
            if self.api_key is None:
                return present, True
            return present, credential is not None and credential.group(1) == self.api_key
        token = h.headers.get("X-Postmark-Server-Token")
        present = token is not None
        if self.api_key is None:
            return present, True
        return present, token == self.api_key

    # ---- payload parsing -------------------------------------------------

    def _new_esp_id(self, esp: str, domain: str) -> str:
        if esp == "mailgun":
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
            return f"<{stamp}.{next(self._ids)}.{uuid.uuid4().hex[:8]}@{domain}>"
        return str(uuid.uuid4())

    def _parse_mailgun(
        self,
        h: _Handler,
        path: str,
        domain: str,
        body: bytes,
        auth_present: bool,
    ) -> list[ReceivedESPMessage]:
        ctype = h.headers.get("Content-Type", "")
        fields: dict[str, list[str]] = {}
        if ctype.lower().startswith("multipart/form-data"):
            # email's MIME parser copes with multipart/form-data and is still
            # in the stdlib (cgi is gone in 3.13).
            raw = b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body
            msg = BytesParser(policy=policy.HTTP).parsebytes(raw)
            if not msg.is_multipart():
                raise _PayloadError("malformed multipart body")
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not isinstance(name, str):
                    continue
                if part.get_filename() is not None:
                    continue  # attachments: not needed for the record
                payload = part.get_payload(decode=True)
                value = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
                fields.setdefault(name, []).append(value)
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _PayloadError("body is not UTF-8") from exc
            fields = parse_qs(text, keep_blank_values=True)
        if not fields.get("from"):
            raise _PayloadError("'from' parameter is missing")
        if not (fields.get("to") or fields.get("cc") or fields.get("bcc")):
            raise _PayloadError("'to' parameter is missing")
        lowered = {k.lower(): v for k, v in fields.items()}
        message_ids = lowered.get("h:message-id")
        return [
            ReceivedESPMessage(
                esp="mailgun",
                path=path,
                to=_addr_specs(fields.get("to", [])),
                cc=_addr_specs(fields.get("cc", [])),
                bcc=_addr_specs(fields.get("bcc", [])),
                from_email=", ".join(fields["from"]),
                subject=(fields.get("subject") or [""])[0],
                message_id=message_ids[0].strip() if message_ids else None,
                esp_message_id=self._new_esp_id("mailgun", domain),
                auth_header_present=auth_present,
                raw_body=body,
                payload=fields,
            )
        ]

    def _parse_postmark(
        self, path: str, body: bytes, auth_present: bool
    ) -> list[ReceivedESPMessage]:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _PayloadError("Invalid JSON") from exc
        kind = _POSTMARK_PATHS[path]
        items: Any
        if kind == "single":
            items = [data]
        elif kind == "batch":
            items = data
        else:
            items = data.get("Messages") if isinstance(data, dict) else None
        if not isinstance(items, list) or not all(isinstance(m, dict) for m in items):
            raise _PayloadError("Invalid email request: unexpected JSON shape")
        records = []
        for item in items:
            if not item.get("From"):
                raise _PayloadError("Invalid 'From' address: ''.")
            message_id = None
            headers = item.get("Headers") or []
            if isinstance(headers, list):
                for header in headers:
                    if (
                        isinstance(header, dict)
                        and str(header.get("Name", "")).lower() == "message-id"
                    ):
                        message_id = str(header.get("Value", "")).strip() or None
            records.append(
                ReceivedESPMessage(
                    esp="postmark",
                    path=path,
                    to=_addr_specs([str(item.get("To") or "")]),
                    cc=_addr_specs([str(item.get("Cc") or "")]),
                    bcc=_addr_specs([str(item.get("Bcc") or "")]),
                    from_email=str(item["From"]),
                    subject=str(item.get("Subject") or ""),
                    message_id=message_id,
                    esp_message_id=self._new_esp_id("postmark", ""),
                    auth_header_present=auth_present,
                    raw_body=body,
                    payload=item,
                )
            )
        return records

    def _ses_account(self, h: _Handler) -> None:
        """SES v2 GetAccount (read-only: what a probe asks); consumes no fault."""
        if not self._check_auth(h, "ses")[1]:
            self._send_json(h, 403, self._error_body("ses", 401))
            return
        self._send_json(
            h,
            200,
            {
                "SendingEnabled": self.ses_sending_enabled,
                "ProductionAccessEnabled": True,
                "EnforcementStatus": "HEALTHY" if self.ses_sending_enabled else "SHUTDOWN",
                "SendQuota": {
                    "Max24HourSend": 50000.0,
                    "MaxSendRate": 14.0,
                    "SentLast24Hours": float(sum(1 for m in self.messages if m.esp == "ses")),
                },
            },
        )

    def _parse_ses_bulk(
        self, path: str, body: bytes, auth_present: bool
    ) -> list[ReceivedESPMessage]:
        """SES v2 SendBulkEmail: one record per ``BulkEmailEntries`` item."""
        try:
            data = json.loads(body)
            entries = data["BulkEmailEntries"]
            if not isinstance(entries, list) or not entries:
                raise TypeError("no entries")
        except (ValueError, TypeError, KeyError) as exc:
            raise _PayloadError("BulkEmailEntries must be a non-empty list") from exc
        records = []
        for entry in entries:
            destination = entry.get("Destination") or {}
            headers = {
                str(h.get("Name", "")).lower(): str(h.get("Value", ""))
                for h in entry.get("ReplacementHeaders") or []
            }
            records.append(
                ReceivedESPMessage(
                    esp="ses",
                    path=path,
                    to=_addr_specs([str(a) for a in destination.get("ToAddresses") or []]),
                    cc=_addr_specs([str(a) for a in destination.get("CcAddresses") or []]),
                    bcc=_addr_specs([str(a) for a in destination.get("BccAddresses") or []]),
                    from_email=str(data.get("FromEmailAddress") or ""),
                    subject="",
                    message_id=headers.get("message-id", "").strip() or None,
                    esp_message_id=self._new_esp_id("ses", ""),
                    auth_header_present=auth_present,
                    raw_body=body,
                    payload=entry,
                )
            )
        return records

    def _parse_ses(self, path: str, body: bytes, auth_present: bool) -> list[ReceivedESPMessage]:
        try:
            data = json.loads(body)
            raw = base64.b64decode(data["Content"]["Raw"]["Data"], validate=True)
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise _PayloadError("Content.Raw.Data must be a base64 MIME message") from exc
        mime = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        destination = data.get("Destination") or {}

        def addresses(header: str, key: str) -> tuple[str, ...]:
            listed = destination.get(key)
            if isinstance(listed, list):
                return _addr_specs([str(a) for a in listed])
            return _addr_specs([str(v) for v in mime.get_all(header, [])])

        to, cc, bcc = addresses("To", "ToAddresses"), addresses("Cc", "CcAddresses"), addresses(
            "Bcc", "BccAddresses"
        )
        if not (to or cc or bcc):
            raise _PayloadError("Missing required parameter: Destination")
        message_id = mime.get("Message-ID")
        return [
            ReceivedESPMessage(
                esp="ses",
                path=path,
                to=to,
                cc=cc,
                bcc=bcc,
                from_email=str(data.get("FromEmailAddress") or mime.get("From") or ""),
                subject=str(mime.get("Subject") or ""),
                message_id=str(message_id).strip() if message_id else None,
                esp_message_id=self._new_esp_id("ses", ""),
                auth_header_present=auth_present,
                raw_body=body,
                payload=data,
            )
        ]

    # ---- responses -------------------------------------------------------

    @staticmethod
    def _success_body(
        esp: str, path: str, records: list[ReceivedESPMessage], errors: list[Any]
    ) -> Any:
        if esp == "mailgun":
            return {"id": records[0].esp_message_id, "message": "Queued. Thank you."}
        if esp == "ses" and path == _SES_BULK_PATH:
            return {
                "BulkEmailEntryResults": [
                    {"Status": "SUCCESS", "MessageId": r.esp_message_id}
                    if e is None
                    else {"Status": str(e), "Error": f"Simulated {e}"}
                    for r, e in zip(records, errors, strict=True)
                ]
            }
        if esp == "ses":
            return {"MessageId": records[0].esp_message_id}
        submitted = datetime.now(UTC).isoformat()
        results = [
            {
                "To": str(r.payload.get("To") or ""),
                "SubmittedAt": submitted,
                "MessageID": r.esp_message_id,
                "ErrorCode": 0,
                "Message": "OK",
            }
            if e is None
            else e
            for r, e in zip(records, errors, strict=True)
        ]
        return results[0] if _POSTMARK_PATHS[path] == "single" else results

    @staticmethod
    def _error_body(esp: str, status: int, detail: str | None = None) -> dict[str, Any]:
        if esp == "mailgun":
            messages = {
                400: "'to' parameter is not a valid address. please check documentation",
                401: "Invalid private key",
                403: "Domain is not allowed to send: please activate your account",
                405: "Method not allowed",
                422: "Unprocessable entity",
                429: "Too many requests",
                500: "Internal server error",
                503: "Service unavailable",
            }
            return {"message": detail or messages.get(status, "Error")}
        if esp == "ses":
            error_type = _SES_ERROR_TYPES.get(status, "InternalFailure")
            return {"__type": error_type, "message": detail or f"Simulated {error_type}"}
        # Postmark documents ErrorCode values for most of these; 10 = bad
        # token, 300 = invalid request, 100 = maintenance, 412 = account
        # pending approval.
        codes = {
            400: (300, "Invalid email request"),
            401: (10, "Request does not contain a valid Server token."),
            403: (412, "Your account is pending approval; sending is restricted."),
            405: (405, "Method not allowed"),
            422: (300, "Invalid email request: simulated unprocessable entity"),
            429: (429, "Rate limit exceeded, retry later."),
            500: (500, "Internal server error"),
            503: (100, "Maintenance"),
        }
        code, message = codes.get(status, (status, "Error"))
        return {"ErrorCode": code, "Message": detail or message}

    def _send_json(
        self,
        h: _Handler,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._send(h, status, json.dumps(payload).encode(), "application/json", headers)

    def _send(
        self,
        h: _Handler,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        if self._plan.mode is ESPFault.REFUSE or self._stopping.is_set():
            # Going down: tell keep-alive clients not to reuse this connection
            # (send_header also sets h.close_connection).
            h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)


def _addr_specs(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(addr for _name, addr in getaddresses(list(values)) if addr)
