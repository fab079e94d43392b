"""The HTTP side of :class:`~mailrouter.testing.FakeESPServer`: listener,
connections, request framing, fault modes and answers. What is specific to
one ESP (paths, credentials, payloads, answer bodies) is in that ESP's module
(``mailgun``, ``postmark``, ``ses``), behind ``ESPFormat``.

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

import contextlib
import http.server
import json
import os
import select
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Self, cast

from .._base import FaultServer
from .._faults import FaultPlan
from . import ses
from ._common import ESPFormat, PayloadError, ReceivedESPMessage
from .mailgun import Mailgun
from .postmark import Postmark
from .ses import AmazonSES


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


#: Base modes in which an account read (a probe) gets an error answer too.
_ACCOUNT_ERRORS = {
    ESPFault.ERROR_500: 500,
    ESPFault.ERROR_503: 503,
    ESPFault.RATE_LIMITED_429: 429,
    ESPFault.UNAUTHORIZED_401: 401,
    ESPFault.FORBIDDEN_403: 403,
    ESPFault.BAD_GATEWAY_502: 502,
    ESPFault.GATEWAY_TIMEOUT_504: 504,
}
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

# Upper bound for accepted request bodies; anything larger is a client bug in
# the test suite, not something we want to buffer.
_MAX_BODY = 50 * 1024 * 1024


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
    # Headers and body are written separately: without TCP_NODELAY the body
    # waits for the client's delayed ACK (~40 ms a request, unlike a real ESP).
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:  # (method name dictated by http.server)
        self.server.owner._handle_request(self)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST


class FakeESPServer(FaultServer[ESPFault, ReceivedESPMessage]):
    """Local fake Mailgun + Postmark + Amazon SES API with runtime-switchable faults.

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
        #: mode applies (a real ESP's processing time; benchmarks use 0.05);
        #: requests wait in parallel.
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
        #: Reason phrase of error answers instead of the standard one (a proxy's
        #: own text, odd bytes included).
        self.error_reason: str | None = None
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
        self._account_reads: list[str] = []
        # Live connections: socket -> (handler thread, busy-with-a-request flag).
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._busy: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._wake: socket.socket | None = None
        self._running = False
        self._formats: tuple[ESPFormat, ...] = (Mailgun(), Postmark(), AmazonSES())
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
    def account_reads(self) -> list[str]:
        """Request targets (path and query) of the account reads a probe made
        (Mailgun's domain, Postmark's server)."""
        with self._lock:
            return list(self._account_reads)

    @property
    def requests_seen(self) -> int:
        """Number of HTTP requests read so far, whatever their outcome."""
        with self._lock:
            return self._requests_seen

    def _reset_locked(self) -> None:
        self._maybe.clear()
        self._requests_seen = 0
        self._account_reads.clear()

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
        if path == ses.ACCOUNT_PATH and h.command == "GET":
            self._ses_account(h)
            return
        for candidate in self._formats:
            account = candidate.account_read(h.command, path)
            if account is not None:
                self._account(h, candidate, account)
                return
        esp = next((f for f in self._formats if f.handles(path)), None)
        if esp is None:
            self._send_json(h, 404, {"message": f"Not found: {path}", "ErrorCode": 404})
            return
        if h.command != "POST":
            self._send_json(h, 405, esp.error_body(405, "Method not allowed"))
            return
        if body is None:
            self._send_json(h, 400, esp.error_body(400, "Malformed request body"))
            h.close_connection = True  # framing is unreliable now
            return
        auth_present, auth_ok = esp.check_auth(h.headers, self.api_key)
        if not auth_ok:
            self._send_json(h, 401, esp.error_body(401))
            return
        try:
            records = esp.parse(path, h.headers, body, auth_present)
        except PayloadError as exc:
            self._send_json(h, 400, esp.error_body(400, str(exc)))
            return
        if self.latency > 0:
            self._stopping.wait(self.latency)
        mode, switched = self._plan.next_transaction()
        if switched is ESPFault.REFUSE:
            # accept_n_then(n, "refuse") just ran out: stop listening now; this
            # request is still served normally.
            with self._control:
                if self._running and self._plan.mode is ESPFault.REFUSE:
                    self._close_listener()
        self._apply(h, sock, esp, path, mode, records)

    def _apply(
        self,
        h: _Handler,
        sock: socket.socket,
        esp: ESPFormat,
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
            self._send_json(h, 200, esp.success_body(path, records, errors))
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
            body = self.error_body if self.error_body is not None else esp.error_body(status)
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

    def _account(self, h: _Handler, esp: ESPFormat, body: Any) -> None:
        """A read of the account (what a probe asks): answered as the base
        mode's HTTP status when that is an error answer, consuming no fault."""
        with self._lock:
            self._account_reads.append(h.path)
        if not esp.check_auth(h.headers, self.api_key)[1]:
            self._send_json(h, 401, esp.error_body(401))
            return
        status = _ACCOUNT_ERRORS.get(self._plan.mode)
        if status is not None:
            self._send_json(h, status, esp.error_body(status))
            return
        self._send_json(h, 200, body)

    def _ses_account(self, h: _Handler) -> None:
        """SES v2 GetAccount (read-only: what a probe asks); consumes no fault."""
        amazon = next(f for f in self._formats if isinstance(f, ses.AmazonSES))
        if not amazon.check_auth(h.headers, self.api_key)[1]:
            self._send_json(h, 403, amazon.error_body(401))
            return
        sent = sum(1 for m in self.messages if m.esp == amazon.name)
        self._send_json(h, 200, amazon.account_body(self.ses_sending_enabled, sent))

    # ---- responses -------------------------------------------------------

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
        h.send_response(status, self.error_reason if status >= 400 else None)
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

