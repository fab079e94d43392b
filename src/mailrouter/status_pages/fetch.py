"""One bounded HTTP GET of a status document.

Bounded in every way a broken or hostile status host could hurt us: a
deadline over the whole exchange (not only per socket read), a size cap on
the body, no redirect to another host (or from https to http), and a JSON
body required. ``If-None-Match`` is sent when an ETag is known; a 304 is
returned as "not modified". Every failure is a :class:`FetchError` with a
short text that never contains the URL (it may carry a token).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

#: Largest body read (status summaries are a few to a few hundred KiB).
MAX_BODY = 1024 * 1024
CHUNK = 64 * 1024
USER_AGENT = "django-mailrouter status page poller"
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class FetchError(Exception):
    """The page could not be fetched or is not JSON; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetched document, or ``not_modified`` (HTTP 304) with none."""

    document: Any = None
    etag: str | None = None
    not_modified: bool = False


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, origin: str, allow_http: bool) -> None:
        self.origin = urlsplit(origin)
        self.allow_http = allow_http

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        target = urlsplit(newurl)
        if target.hostname != self.origin.hostname or target.port != self.origin.port:
            raise FetchError(f"HTTP {code} redirect to another host ({target.hostname})")
        if target.scheme != "https" and not self.allow_http:
            raise FetchError(f"HTTP {code} redirect to plain http")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """Ends the exchange at the deadline, whatever phase it is in.

    A socket timeout bounds each read, not their sum: a host trickling one
    byte at a time (headers or body) would keep a fetch alive for ever. Every
    socket the fetch opens is registered here; a timer shuts them down at the
    deadline, which wakes the blocked read, and the fetch reports a timeout.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.at = time.monotonic() + timeout
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.001, self.at - time.monotonic())

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        # socket.socket's own shutdown: an SSLSocket's would also drop its TLS
        # object under the reading thread. OSError: already closed.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()


def _watched(base: type[http.client.HTTPConnection], deadline: _Deadline) -> Any:
    class Watched(base):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            self.timeout = deadline.remaining()  # a redirect's connection gets what is left
            super().connect()
            deadline.register(self.sock)

    return Watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: Any) -> Any:
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__(context=_tls_context())
        self.deadline = deadline

    def https_open(self, req: Any) -> Any:
        return self.do_open(
            _watched(http.client.HTTPSConnection, self.deadline), req, context=_tls_context()
        )


def fetch(
    url: str,
    *,
    timeout: float,
    etag: str | None = None,
    allow_http: bool = False,
    max_body: int = MAX_BODY,
) -> Fetched:
    """GET ``url`` within ``timeout`` seconds in total; raise FetchError."""
    with _Deadline(timeout) as deadline:
        try:
            return _fetch(url, deadline, etag, allow_http, max_body)
        except FetchError:
            if deadline.expired:
                raise FetchError(f"timed out (over {timeout:g} s in total)") from None
            raise


def _fetch(
    url: str, deadline: _Deadline, etag: str | None, allow_http: bool, max_body: int
) -> Fetched:
    handlers: list[Any] = [
        _SameHostRedirects(url, allow_http), _HTTPHandler(deadline), _HTTPSHandler(deadline)
    ]
    if urlsplit(url).hostname in _LOOPBACK:
        handlers.append(urllib.request.ProxyHandler({}))  # a proxy cannot reach our loopback
    opener = urllib.request.build_opener(*handlers)
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    url = _credentials_to_header(url, headers)
    request = urllib.request.Request(url, headers=headers)
    try:
        with opener.open(request, timeout=deadline.timeout) as response:
            body = _read_bounded(response, deadline.at, max_body)
            etag = response.headers.get("ETag")
        if deadline.expired:  # the read ended because the deadline shut the socket
            raise FetchError("timed out")
    except FetchError:
        raise
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 304:
            return Fetched(etag=etag, not_modified=True)
        raise FetchError(f"HTTP {error.code}") from None
    except urllib.error.URLError as error:
        raise FetchError(f"unreachable: {_reason(error.reason)}") from None
    except (TimeoutError, OSError) as error:
        raise FetchError(f"unreachable: {_reason(error)}") from None
    except Exception as error:  # http.client's protocol errors, bad URLs
        raise FetchError(f"failed: {type(error).__name__}") from None
    return Fetched(_parse(body), etag)


def _credentials_to_header(url: str, headers: dict[str, str]) -> str:
    """``url`` without its userinfo, which goes into an HTTP basic
    ``Authorization`` header instead (urllib would take it for the host)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA store costs tens of milliseconds: once per process.
    return ssl.create_default_context()


def _read_bounded(response: Any, deadline: float, max_body: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchError("timed out reading the body")
        chunk = response.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_body:
            raise FetchError(f"body over {max_body} bytes")
        chunks.append(chunk)


def _parse(body: bytes) -> Any:
    text = body.lstrip()[:1]
    if text == b"<":
        raise FetchError("HTML body, not JSON (a status host's web page?)")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise FetchError("body is not JSON") from None


def _reason(reason: Any) -> str:
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "timed out"
    if isinstance(reason, BaseException):
        return type(reason).__name__
    return str(reason)[:80]
