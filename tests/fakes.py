"""In-process leaf backends for tests that need a scripted fault schedule.

Real servers (mailrouter.testing) are used wherever the protocol matters; these
exist for property tests that need thousands of fast, exactly controlled
attempts. Each raises the same exception types real backends raise.
"""

from __future__ import annotations

import smtplib
import threading
from collections import defaultdict, deque
from typing import Any

from django.core.mail.backends.base import BaseEmailBackend

from mailrouter.compat import BACKENDS_TAKE_ALIAS

# alias -> queue of actions for upcoming sends (default: "accept")
SCRIPTS: dict[str, deque[str]] = defaultdict(deque)
# alias -> Message-IDs the mailer has (accepted, or possibly accepted)
RECEIVED: dict[str, list[str]] = defaultdict(list)
OPEN_CALLS: dict[str, int] = defaultdict(int)
CLOSE_CALLS: dict[str, int] = defaultdict(int)
# Every message handed to a mailer: (alias, Message-ID, subject, recipients),
# to check that no observer's change reached a later mailer.
SEEN: list[tuple[str, str, str, tuple[str, ...]]] = []
# alias -> attempts that reached the mailer: a failed open(), or a message
# handed to send_messages() (what "skipped: no I/O" is checked against)
TRIED: dict[str, int] = defaultdict(int)
_lock = threading.Lock()

ACTIONS = ("accept", "refuse_connect", "tempfail", "reject", "incompatible", "drop_after_body")


def reset() -> None:
    for registry in (SCRIPTS, RECEIVED, OPEN_CALLS, CLOSE_CALLS, TRIED):
        registry.clear()
    SEEN.clear()


def message_id(message: Any) -> str:
    return str(message.extra_headers.get("Message-ID"))


class ScriptedBackend(BaseEmailBackend):
    """A mailer whose next results are scripted in ``SCRIPTS[alias]``.

    ``refuse_connect`` fails in ``open()``, like a dead server; the action is
    consumed there. ``drop_after_body`` records the message as received and then
    fails like a connection lost after the body: the mailer may deliver it.
    With ``fail_silently`` (as Django's own backends do) errors are swallowed
    and the message is counted as not sent, whatever happened.
    """

    def __init__(self, fail_silently: bool = False, *, name: str = "", **kwargs: Any) -> None:
        if BACKENDS_TAKE_ALIAS:
            super().__init__(**kwargs)
        else:
            kwargs.pop("alias", None)
            super().__init__()
        self.name = name or str(getattr(self, "alias", "") or "scripted")
        self.fail_silently = fail_silently
        self.connected = False
        self.mutate = False

    def open(self) -> bool:
        if self.connected:
            return False
        with _lock:
            OPEN_CALLS[self.name] += 1
            script = SCRIPTS[self.name]
            if script and script[0] == "refuse_connect":
                script.popleft()
                TRIED[self.name] += 1
                raise ConnectionRefusedError(111, "Connection refused")
        self.connected = True
        return True

    def close(self) -> None:
        if self.connected:
            CLOSE_CALLS[self.name] += 1
        self.connected = False

    def send_messages(self, email_messages: Any) -> int:
        try:
            return self._send_all(email_messages)
        except Exception:
            if self.fail_silently:
                return 0
            raise

    def _send_all(self, email_messages: Any) -> int:
        sent = 0
        for message in email_messages:
            with _lock:
                script = SCRIPTS[self.name]
                action = script.popleft() if script else "accept"
                TRIED[self.name] += 1
                seen = (str(message.subject), tuple(message.recipients()))
                SEEN.append((self.name, message_id(message), *seen))
            # Backends may change the message; the router must undo this on failure.
            message.extra_headers["X-Touched-By"] = self.name
            message.touched = [*getattr(message, "touched", []), self.name]
            if action == "accept":
                RECEIVED[self.name].append(message_id(message))
                sent += 1
            elif action == "refuse_connect":
                self.connected = False
                raise ConnectionRefusedError(111, "Connection refused")
            elif action == "tempfail":
                raise smtplib.SMTPDataError(451, b"try again later")
            elif action == "reject":
                raise smtplib.SMTPRecipientsRefused({"x@example.com": (550, b"no such user")})
            elif action == "incompatible":
                raise TypeError("Object of type Decimal is not JSON serializable")
            elif action == "drop_after_body":
                RECEIVED[self.name].append(message_id(message))
                raise TimeoutError("timed out waiting for the final reply")
            else:  # pragma: no cover - a typo in a test
                raise AssertionError(action)
        return sent


class QueueFull(Exception):
    """A third-party library's own error: its queue took nothing."""


class QueueBackend(BaseEmailBackend):
    """A third-party backend handing messages to a local queue; its own
    library error (QueueFull) means nothing was queued, but only a leaf kind
    registered for it can tell the router so. It keeps its timeout as
    ``deadline`` and its retry count as ``retries``."""

    full = False

    def __init__(self, *, deadline: float | None = None, retries: int = 0, **kwargs: Any) -> None:
        kwargs.pop("fail_silently", None)
        if not BACKENDS_TAKE_ALIAS:
            kwargs.pop("alias", None)
        super().__init__(**kwargs)
        self.deadline = deadline
        self.retries = retries
        self.queued: list[Any] = []

    def send_messages(self, email_messages: Any) -> int:
        if QueueBackend.full:
            raise QueueFull("queue full")
        self.queued.extend(email_messages)
        return len(email_messages)
