"""A small, hand-written, fault-injecting SMTP server for tests, demos and benchmarks.

Standard library only.  The server runs an :mod:`asyncio` event loop in one
background daemon thread, so any number of concurrent client connections costs
no extra threads, and :meth:`FaultySMTPServer.stop` can cancel every
connection handler -- including deliberately hung ones -- and join the thread
deterministically.

Protocol coverage (enough for :mod:`smtplib` and Django's SMTP backend):
``EHLO``/``HELO``, ``MAIL FROM``, ``RCPT TO``, ``DATA`` (with dot-unstuffing),
``RSET``, ``NOOP``, ``QUIT``, ``VRFY``, ``HELP`` and, when constructed with
credentials, ``AUTH PLAIN`` / ``AUTH LOGIN``.  Any number of transactions may
be run over one connection.  No TLS.

Fault model (see :class:`SMTPFault`): the mode for a transaction is resolved
when ``MAIL FROM`` arrives -- from the head of :attr:`FaultySMTPServer.schedule`
if it is non-empty, else from :attr:`FaultySMTPServer.mode`.  Connection-phase
faults (``hang_greeting``, ``tempfail_connect``) at the head of the schedule
(or as the base mode with an empty schedule) are instead applied when a new
connection is accepted, and ``auth_fail`` when ``AUTH`` arrives, so one client
attempt consumes exactly one schedule entry whichever phase it fails in.
When a connection-phase fault is resolved at ``MAIL FROM`` (a reused
connection), its per-command equivalent is applied: ``tempfail_connect`` ->
``421`` and close, ``hang_greeting`` -> never reply, ``auth_fail`` -> ``530``,
``refuse`` -> close without reply.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fnmatch
import itertools
import re
import socket
import threading
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from enum import StrEnum
from typing import Any, Self, TypeVar

from ._base import FaultServer
from ._faults import FaultPlan

__all__ = ["FaultySMTPServer", "ReceivedMessage", "SMTPFault"]

_T = TypeVar("_T")


class SMTPFault(StrEnum):
    """Fault modes of :class:`FaultySMTPServer` (plain strings are accepted too).

    What the *server* does in each mode; the client-visible effect through
    :mod:`smtplib` is noted after the arrow.
    """

    #: Normal operation -> message delivered.
    ACCEPT = "accept"
    #: Listening socket closed; switching away re-binds the same port
    #: -> ``ConnectionRefusedError`` on connect.  Reused connections are closed
    #: without reply at their next ``MAIL FROM``.  Not schedulable.
    REFUSE = "refuse"
    #: Accept TCP but never send the 220 greeting -> client timeout.
    HANG_GREETING = "hang_greeting"
    #: Greet with 421 and close -> ``SMTPConnectError(421)``.
    TEMPFAIL_CONNECT = "tempfail_connect"
    #: 450 to every ``RCPT TO`` -> ``SMTPRecipientsRefused``.
    TEMPFAIL_RCPT = "tempfail_rcpt"
    #: 550 to every ``RCPT TO`` -> ``SMTPRecipientsRefused``.
    REJECT_RCPT = "reject_rcpt"
    #: 451 after the message body -> ``SMTPDataError(451)``.
    TEMPFAIL_DATA = "tempfail_data"
    #: 554 after the message body -> ``SMTPDataError(554)``.
    REJECT_DATA = "reject_data"
    #: Read the whole body, then close without replying (the message *may*
    #: have been delivered, from the client's point of view)
    #: -> ``SMTPServerDisconnected``.
    DROP_AFTER_BODY = "drop_after_body"
    #: Close the connection when ``MAIL FROM`` arrives -> ``SMTPServerDisconnected``.
    DROP_BEFORE_DATA = "drop_before_data"
    #: Read the whole body and never reply -> client read timeout.
    HANG_AFTER_BODY = "hang_after_body"
    #: 535 to every ``AUTH`` -> ``SMTPAuthenticationError``.
    AUTH_FAIL = "auth_fail"


# Faults applied when a connection is accepted (before any transaction).
_CONNECTION_FAULTS = frozenset({SMTPFault.HANG_GREETING, SMTPFault.TEMPFAIL_CONNECT})
_AUTH_FAULTS = frozenset({SMTPFault.AUTH_FAIL})

_MAIL_RE = re.compile(r"^FROM:\s*<([^>]*)>(?:\s+(.*))?$", re.IGNORECASE)
_RCPT_RE = re.compile(r"^TO:\s*<([^>]*)>(?:\s+(.*))?$", re.IGNORECASE)

# Generous line limit: DATA lines are read with readline(), and an honest
# client never sends lines anywhere near this long (RFC 5321 says 1000).
_LINE_LIMIT = 1 << 20


@dataclass(frozen=True)
class ReceivedMessage:
    """A message the server accepted (replied 250 to the end of ``DATA``).

    ``data`` is the dot-unstuffed message content exactly as transmitted,
    each line with its line ending (so normally ending in ``b"\\r\\n"``).
    ``message_id`` is the unfolded value of the ``Message-ID`` header,
    angle brackets included, or ``None`` if there is none.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message_id: str | None

    def parsed(self) -> EmailMessage:
        """Return ``data`` parsed as an :class:`email.message.EmailMessage`."""
        return BytesParser(policy=policy.default).parsebytes(self.data)


def _parse_message_id(data: bytes) -> str | None:
    # Only the header block is parsed; compat32 gives the raw value, which we
    # unfold ourselves so the result is independent of line folding.
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(data)
    value = headers.get("Message-ID")
    if value is None:
        return None
    unfolded = "".join(str(value).split())
    return unfolded or None


class _Hangup(Exception):
    """Raised inside a session to end it (the connection is then closed)."""


class _Session:
    """State of one client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeted = False
        self.authenticated = False
        # Once an AUTH has been failed by the auth_fail fault, every later AUTH
        # on the connection fails too: smtplib tries each advertised mechanism
        # in turn and must not succeed with the second one.
        self.auth_poisoned = False
        self.in_transaction = False
        self.tx_mode = SMTPFault.ACCEPT
        self.mail_from = ""
        self.rcpt_tos: list[str] = []

    def reset_transaction(self) -> None:
        self.in_transaction = False
        self.tx_mode = SMTPFault.ACCEPT
        self.mail_from = ""
        self.rcpt_tos = []


class FaultySMTPServer(FaultServer[SMTPFault, ReceivedMessage]):
    """Local SMTP server with runtime-switchable fault injection.

    Contract:

    * Binds ``host`` (default ``127.0.0.1``) and ``port`` (default 0 = any free
      port) on :meth:`start`; :attr:`port` holds the real port afterwards and
      is kept for the lifetime of the object (``refuse`` and restarts re-bind
      it).
    * :meth:`start` returns once the server accepts connections (unless the
      mode is ``refuse``); :meth:`stop` closes every connection, including
      hung ones, and joins the server thread before returning (well under a
      second).  Both are idempotent; the object is a context manager.
    * All public attributes and methods are thread-safe.  Collections are
      returned as snapshots.
    * One *transaction* is one ``MAIL FROM``: :meth:`accept_n_then` counts per
      ``MAIL FROM`` (an abandoned transaction still counts), so concurrent
      clients cannot get more than ``n`` through.  :attr:`schedule` entries
      are consumed one per client attempt, whichever phase it fails in (see
      the module docstring for the phase rules), and :attr:`applied_modes`
      gets one entry per connection-phase fault or transaction.
    * Setting :attr:`mode` to ``refuse`` closes the listening socket; live
      connections are closed without reply at their next ``MAIL FROM``.
    * With ``username``/``password`` set, ``AUTH PLAIN LOGIN`` is advertised
      in the EHLO reply and ``MAIL FROM`` requires prior authentication
      (``530`` otherwise); wrong credentials get ``535``.  Without credentials
      AUTH is not advertised and, if a client sends it anyway, any credentials
      are accepted (unless the mode is ``auth_fail``).
    * A message is appended to :attr:`messages` only when the server replied
      250 to the end of ``DATA``.
    * Recipients matching a glob in :attr:`reject_recipients` (case-insensitive)
      get ``550``; the others are accepted, so partial refusal can be tested.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        username: str | None = None,
        password: str | None = None,
        mode: SMTPFault | str = SMTPFault.ACCEPT,
        reject_recipients: Iterable[str] = (),
        hostname: str = "faulty-smtp.test",
        max_size: int | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("username and password must be given together")
        self.host = host
        #: Real port once started (the requested one before that).
        self.port = port
        self.username = username
        self.password = password
        self.hostname = hostname
        #: Largest message in bytes (advertised as ``SIZE``; larger ones get
        #: ``552 5.3.4`` at ``MAIL FROM`` when the client declares its size,
        #: else after the body), as real relays do. None: no limit.
        self.max_size = max_size
        #: The text of the 550 answering a recipient in ``reject_recipients``
        #: (a real server's own words, odd bytes included).
        self.reject_text = "5.1.1 Recipient address rejected"
        super().__init__(
            FaultPlan(SMTPFault, mode, SMTPFault.ACCEPT, frozenset({SMTPFault.REFUSE}))
        )
        self._transactions = 0
        self._reject_patterns: frozenset[str] = frozenset(p.lower() for p in reject_recipients)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # The following are only touched from the event-loop thread.
        self._listener: socket.socket | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._queue_ids = itertools.count(1)
        self._closing = False

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and start serving in a background daemon thread.

        Raises ``RuntimeError`` if already running and ``OSError`` if the port
        cannot be bound.  May be called again after :meth:`stop`; the same
        port is then re-bound.
        """
        with self._control:
            if self._thread is not None:
                raise RuntimeError("server already running")
            # Bind in the caller's thread so a bind error surfaces right here
            # and port 0 is resolved before anything else happens.
            sock = self._bind()
            self.port = sock.getsockname()[1]
            self._closing = False
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run_loop,
                args=(loop, ready),
                name=f"FaultySMTPServer:{self.port}",
                daemon=True,
            )
            self._loop, self._thread = loop, thread
            thread.start()
            ready.wait()
            try:
                self._call(self._listen(sock))
                if self._plan.mode is SMTPFault.REFUSE:
                    self._call(self._close_listener())
            except BaseException:
                sock.close()
                self.stop()
                raise
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, then join the server thread.

        Hung clients do not delay this: their connections are aborted, which
        ends their handlers.  Idempotent.  Raises ``RuntimeError`` only if the
        thread failed to exit within ``timeout`` (a bug).
        """
        with self._control:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            try:
                if thread.is_alive():
                    with contextlib.suppress(Exception):
                        self._call(self._shutdown(), timeout)
                    loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)
                if thread.is_alive():
                    raise RuntimeError(f"{thread.name} did not stop within {timeout}s")
            finally:
                self._loop = self._thread = None

    def _is_running(self) -> bool:
        return self._thread is not None

    def __repr__(self) -> str:
        return f"<FaultySMTPServer {self.host}:{self.port} mode={self.mode.value}>"

    # ------------------------------------------------------------------
    # Fault control (mode, accept_n_then, schedule: see FaultServer)
    # ------------------------------------------------------------------

    @property
    def reject_recipients(self) -> frozenset[str]:
        """Glob patterns (lower-cased) of recipients answered with 550 at ``RCPT TO``."""
        with self._lock:
            return self._reject_patterns

    @reject_recipients.setter
    def reject_recipients(self, patterns: Iterable[str]) -> None:
        new = frozenset(p.lower() for p in patterns)
        with self._lock:
            self._reject_patterns = new

    # ------------------------------------------------------------------
    # Observations (messages, connections_opened, errors: see FaultServer)
    # ------------------------------------------------------------------

    @property
    def transactions(self) -> int:
        """Number of ``MAIL FROM`` commands received so far."""
        with self._lock:
            return self._transactions

    def _reset_locked(self) -> None:
        self._transactions = 0

    # ------------------------------------------------------------------
    # Event-loop plumbing
    # ------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        # create_server sets SO_REUSEADDR on POSIX, which lets us re-bind the
        # same port while old accepted connections linger in TIME_WAIT.
        # A short retry loop covers the rare EADDRINUSE race on re-bind.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                sock = socket.create_server((self.host, self.port), backlog=128)
            except OSError:
                if self.port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
                continue
            sock.setblocking(False)
            return sock

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            # Drop whatever is left (normally nothing) so no executor thread
            # or pending callback outlives the server.
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("server not running")
        if self._thread is threading.current_thread():
            coro.close()
            raise RuntimeError("cannot block on the server loop from its own thread")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def _sync_listener(self) -> None:
        """Make the listener match the base mode (caller holds ``_control``)."""
        if self._loop is None:
            return  # not running: start() applies the mode
        if self._plan.mode is SMTPFault.REFUSE:
            self._call(self._close_listener())
        else:
            self._call(self._ensure_listener())

    # Connections are accepted by a plain reader callback on the listening
    # socket instead of asyncio.start_server() or loop.sock_accept():
    # closing an asyncio.Server while an accept is in flight trips an
    # assertion in Server._attach (CPython 3.12.1) and leaks the accepted
    # socket, and cancelling a sock_accept() that just completed drops the
    # accepted socket too -- exactly what "refuse" and stop() do.  A
    # synchronous callback accepts and hands over in one step, so nothing can
    # be lost in between.

    async def _listen(self, sock: socket.socket) -> None:
        self._listener = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_acceptable, sock)

    def _on_acceptable(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return  # backlog drained
            except OSError:
                return  # listener closed or transient accept error
            conn.setblocking(False)
            # Keep a strong reference: the loop only holds tasks weakly.
            task = loop.create_task(self._serve_socket(conn))
            self._conn_tasks.add(task)
            task.add_done_callback(self._conn_tasks.discard)

    async def _serve_socket(self, conn: socket.socket) -> None:
        if self._closing:
            conn.close()  # accepted just before shutdown; never start a session
            return
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=_LINE_LIMIT)
        except BaseException:
            conn.close()
            raise
        await self._handle_client(reader, writer)

    async def _ensure_listener(self) -> None:
        if self._listener is None:
            await self._listen(self._bind())

    async def _close_listener(self) -> None:
        self._close_listener_now()

    def _close_listener_now(self) -> None:
        """Close the listening socket right now (event-loop thread only).

        Synchronous so that, when it returns, connection attempts are refused.
        Live connections are not touched.
        """
        lsock, self._listener = self._listener, None
        if lsock is not None:
            # Unregister before closing so the selector never sees a closed fd.
            asyncio.get_running_loop().remove_reader(lsock.fileno())
            lsock.close()

    async def _shutdown(self) -> None:
        self._closing = True
        self._close_listener_now()
        me = asyncio.current_task()
        # Loop until no other task is left: that covers connection handlers
        # as well as connections accepted but not yet handed over (whose
        # writers only appear later, hence the repeated abort pass).
        for _ in range(25):
            # Aborting a transport feeds EOF to its reader and fails pending
            # drains, so every handler -- hung ones included -- ends by itself.
            for writer in list(self._writers):
                writer.transport.abort()
            others = asyncio.all_tasks() - {me}
            if not others:
                break
            await asyncio.wait(others, timeout=0.2)
        else:
            # Belt and braces; should not happen.
            others = asyncio.all_tasks() - {me}
            for task in others:
                task.cancel()
            if others:
                await asyncio.wait(others, timeout=1.0)
        # Let the transports' close callbacks (scheduled with call_soon) run.
        for _ in range(3):
            await asyncio.sleep(0)

    # ------------------------------------------------------------------
    # SMTP protocol
    # ------------------------------------------------------------------

    async def _handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(writer)
        if self._closing:
            # Handed over while stop() was running; it may already have done
            # its abort pass for this connection.
            self._writers.discard(writer)
            writer.transport.abort()
            return
        with self._lock:
            self._connections_opened += 1
        session = _Session(reader, writer)
        try:
            await self._run_session(session)
        except (_Hangup, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only _shutdown() cancels us (as a last resort) and this task is
            # the root of its connection: nothing awaits the cancellation.
            pass
        except OSError:
            pass  # peer vanished mid-write, etc.
        except Exception as exc:  # record server bugs for tests
            self._record_error(exc)
        finally:
            self._writers.discard(writer)
            if self._closing:
                writer.transport.abort()
            else:
                writer.close()

    async def _reply(self, session: _Session, code: int, *lines: str) -> None:
        texts = lines or ("",)
        out = []
        for i, text in enumerate(texts):
            sep = " " if i == len(texts) - 1 else "-"
            out.append(f"{code}{sep}{text}\r\n")
        session.writer.write("".join(out).encode("utf-8"))
        await session.writer.drain()

    async def _hang(self, session: _Session) -> None:
        # Never reply; just wait for the client to give up (EOF) or for
        # stop() to cancel us.  Anything the client sends is discarded.
        while await session.reader.read(65536):
            pass
        raise _Hangup

    async def _close_without_reply(self, session: _Session) -> None:
        raise _Hangup

    async def _readline(self, session: _Session) -> bytes:
        try:
            line = await session.reader.readline()
        except ValueError:  # line longer than the stream limit
            await self._reply(session, 500, "5.5.6 Line too long")
            raise _Hangup from None
        if not line.endswith(b"\n"):
            raise _Hangup  # EOF (possibly mid-line)
        return line

    async def _run_session(self, session: _Session) -> None:
        if self._plan.mode is SMTPFault.REFUSE:
            # Accepted from the backlog just as the listener was closing.
            raise _Hangup
        fault = self._plan.take_phase_fault(_CONNECTION_FAULTS)
        if fault is SMTPFault.HANG_GREETING:
            await self._hang(session)
        if fault is SMTPFault.TEMPFAIL_CONNECT:
            await self._reply(
                session, 421, f"4.3.2 {self.hostname} Service not available, try later"
            )
            raise _Hangup
        await self._reply(session, 220, f"{self.hostname} ESMTP FaultySMTPServer ready")
        while True:
            raw = await self._readline(session)
            line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            arg = arg.strip()
            handler = self._COMMANDS.get(verb)
            if handler is None:
                await self._reply(session, 500, "5.5.2 Error: command not recognized")
                continue
            await handler(self, session, arg)

    async def _cmd_ehlo(self, session: _Session, arg: str) -> None:
        if not arg:
            await self._reply(session, 501, "5.5.4 Syntax: EHLO hostname")
            return
        session.greeted = True
        session.reset_transaction()
        lines = [f"{self.hostname} Hello {arg}", "8BITMIME", "SMTPUTF8"]
        if self.max_size is not None:
            lines.append(f"SIZE {self.max_size}")
        if self.username is not None:
            lines.append("AUTH PLAIN LOGIN")
        lines.append("HELP")
        await self._reply(session, 250, *lines)

    async def _cmd_helo(self, session: _Session, arg: str) -> None:
        if not arg:
            await self._reply(session, 501, "5.5.4 Syntax: HELO hostname")
            return
        session.greeted = True
        session.reset_transaction()
        await self._reply(session, 250, self.hostname)

    async def _cmd_noop(self, session: _Session, arg: str) -> None:
        await self._reply(session, 250, "2.0.0 OK")

    async def _cmd_rset(self, session: _Session, arg: str) -> None:
        session.reset_transaction()
        await self._reply(session, 250, "2.0.0 OK")

    async def _cmd_quit(self, session: _Session, arg: str) -> None:
        await self._reply(session, 221, "2.0.0 Bye")
        raise _Hangup

    async def _cmd_vrfy(self, session: _Session, arg: str) -> None:
        await self._reply(session, 252, "2.0.0 Cannot VRFY user")

    async def _cmd_help(self, session: _Session, arg: str) -> None:
        await self._reply(session, 214, "2.0.0 EHLO HELO AUTH MAIL RCPT DATA RSET NOOP VRFY QUIT")

    async def _cmd_auth(self, session: _Session, arg: str) -> None:
        if not session.greeted:
            await self._reply(session, 503, "5.5.1 Error: send EHLO first")
            return
        if session.authenticated:
            await self._reply(session, 503, "5.5.1 Error: already authenticated")
            return
        if session.in_transaction:
            await self._reply(session, 503, "5.5.1 Error: AUTH not allowed in a transaction")
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        initial = initial.strip()
        if mechanism == "PLAIN":
            blob = await self._auth_response(session, initial, "")
            if blob is None:
                return
            parts = blob.split(b"\0")
            if len(parts) != 3:
                await self._reply(session, 501, "5.5.2 Malformed PLAIN response")
                return
            user, password = parts[1], parts[2]
        elif mechanism == "LOGIN":
            user_b = await self._auth_response(session, initial, "VXNlcm5hbWU6")
            if user_b is None:
                return
            pass_b = await self._auth_response(session, "", "UGFzc3dvcmQ6")
            if pass_b is None:
                return
            user, password = user_b, pass_b
        else:
            await self._reply(session, 504, "5.5.4 Unrecognized authentication type")
            return
        if session.auth_poisoned or self._plan.take_phase_fault(_AUTH_FAULTS) is not None:
            session.auth_poisoned = True
            await self._reply(session, 535, "5.7.8 Authentication credentials invalid")
            return
        if self.username is not None and (
            user.decode("utf-8", "replace") != self.username
            or password.decode("utf-8", "replace") != self.password
        ):
            await self._reply(session, 535, "5.7.8 Authentication credentials invalid")
            return
        session.authenticated = True
        await self._reply(session, 235, "2.7.0 Authentication successful")

    async def _auth_response(self, session: _Session, initial: str, challenge: str) -> bytes | None:
        """Return the decoded client response (prompting with ``challenge`` if needed).

        Replies with an error and returns ``None`` on cancel or bad base64.
        """
        if initial:
            text = initial
        else:
            await self._reply(session, 334, challenge)
            text = (await self._readline(session)).decode("ascii", "replace").strip()
        if text == "*":
            await self._reply(session, 501, "5.7.0 Authentication cancelled")
            return None
        if text == "=":  # RFC 4954: an empty initial response
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            await self._reply(session, 501, "5.5.2 Cannot decode response")
            return None

    async def _cmd_mail(self, session: _Session, arg: str) -> None:
        with self._lock:
            self._transactions += 1
        if not session.greeted:
            await self._reply(session, 503, "5.5.1 Error: send HELO/EHLO first")
            return
        if session.in_transaction:
            await self._reply(session, 503, "5.5.1 Error: nested MAIL command")
            return
        match = _MAIL_RE.match(arg)
        if match is None:
            await self._reply(session, 501, "5.5.4 Syntax: MAIL FROM:<address>")
            return
        if self.username is not None and not session.authenticated:
            await self._reply(session, 530, "5.7.0 Authentication required")
            return
        mode, switched = self._plan.next_transaction()
        if switched is SMTPFault.REFUSE:
            # accept_n_then(n, "refuse") just ran out: stop listening now.
            # This transaction itself is still served (mode is "accept").
            self._close_listener_now()
        if mode in (SMTPFault.REFUSE, SMTPFault.DROP_BEFORE_DATA):
            await self._close_without_reply(session)
        if mode is SMTPFault.HANG_GREETING:
            await self._hang(session)
        if mode is SMTPFault.TEMPFAIL_CONNECT:
            await self._reply(session, 421, f"4.3.2 {self.hostname} Service not available, closing")
            raise _Hangup
        if mode is SMTPFault.AUTH_FAIL:
            await self._reply(session, 530, "5.7.0 Authentication required")
            return
        declared = re.search(r"\bSIZE=(\d+)", match.group(2) or "", re.IGNORECASE)
        if self.max_size is not None and declared and int(declared.group(1)) > self.max_size:
            await self._reply(session, 552, "5.3.4 Message size exceeds fixed limit")
            return
        session.in_transaction = True
        session.tx_mode = mode
        session.mail_from = match.group(1)
        session.rcpt_tos = []
        await self._reply(session, 250, "2.1.0 OK")

    async def _cmd_rcpt(self, session: _Session, arg: str) -> None:
        if not session.in_transaction:
            await self._reply(session, 503, "5.5.1 Error: need MAIL command")
            return
        match = _RCPT_RE.match(arg)
        if match is None:
            await self._reply(session, 501, "5.5.4 Syntax: RCPT TO:<address>")
            return
        address = match.group(1)
        if session.tx_mode is SMTPFault.TEMPFAIL_RCPT:
            await self._reply(session, 450, "4.2.1 Mailbox temporarily unavailable")
            return
        if session.tx_mode is SMTPFault.REJECT_RCPT:
            await self._reply(session, 550, "5.1.1 Mailbox unavailable")
            return
        lowered = address.lower()
        if any(fnmatch.fnmatchcase(lowered, p) for p in self.reject_recipients):
            await self._reply(session, 550, self.reject_text)
            return
        session.rcpt_tos.append(address)
        await self._reply(session, 250, "2.1.5 OK")

    async def _cmd_data(self, session: _Session, arg: str) -> None:
        if not session.in_transaction:
            await self._reply(session, 503, "5.5.1 Error: need MAIL command")
            return
        if not session.rcpt_tos:
            await self._reply(session, 554, "5.5.1 Error: no valid recipients")
            return
        await self._reply(session, 354, "End data with <CR><LF>.<CR><LF>")
        chunks: list[bytes] = []
        while True:
            line = await self._readline(session)
            if line in (b".\r\n", b".\n"):
                break
            # Dot-unstuffing (RFC 5321 section 4.5.2).
            chunks.append(line[1:] if line.startswith(b".") else line)
        data = b"".join(chunks)
        mode = session.tx_mode
        mail_from, rcpt_tos = session.mail_from, tuple(session.rcpt_tos)
        session.reset_transaction()
        if mode is SMTPFault.DROP_AFTER_BODY:
            await self._close_without_reply(session)
        if mode is SMTPFault.HANG_AFTER_BODY:
            await self._hang(session)
        if mode is SMTPFault.TEMPFAIL_DATA:
            await self._reply(session, 451, "4.3.0 Temporary failure, try again later")
            return
        if mode is SMTPFault.REJECT_DATA:
            await self._reply(session, 554, "5.6.0 Message rejected")
            return
        if self.max_size is not None and len(data) > self.max_size:
            await self._reply(session, 552, "5.3.4 Message size exceeds fixed limit")
            return
        message = ReceivedMessage(mail_from, rcpt_tos, data, _parse_message_id(data))
        self._record_messages([message])
        await self._reply(session, 250, f"2.0.0 OK: queued as Q{next(self._queue_ids):06d}")

    _COMMANDS = {
        "EHLO": _cmd_ehlo,
        "HELO": _cmd_helo,
        "NOOP": _cmd_noop,
        "RSET": _cmd_rset,
        "QUIT": _cmd_quit,
        "VRFY": _cmd_vrfy,
        "HELP": _cmd_help,
        "AUTH": _cmd_auth,
        "MAIL": _cmd_mail,
        "RCPT": _cmd_rcpt,
        "DATA": _cmd_data,
    }
