"""What every leaf kind shares: the stages of an attempt, the ``LeafKind``
protocol, and the pieces of HTTP and probing that several kinds use."""

from __future__ import annotations

import enum
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from django.core.mail import EmailMessage

from ..errors import MailRouterError
from ..outcomes import Outcome


class Stage(enum.StrEnum):
    """How far an attempt got before the error."""

    #: Building the message or API request (Anymail: ``pre_send``, payload);
    #: nothing has left the process.
    PREPARE = "prepare"
    #: Opening the connection: connect, TLS, greeting, authentication.
    CONNECT = "connect"
    #: Sending, before the complete message body (or HTTP request) was transmitted.
    ENVELOPE = "envelope"
    #: The complete body (or HTTP request) was transmitted; waiting for the
    #: reply, or judging the reply that came.
    BODY_SENT = "body_sent"
    #: Inside an HTTP request whose connection could not be watched: the
    #: request may have left.
    REQUEST = "request"
    #: The mailer answered and its per-recipient verdict is recorded (Anymail's
    #: ``anymail_status``); an error now comes from code after the answer,
    #: such as a ``post_send`` receiver.
    ANSWERED = "answered"
    #: Sending through a backend that does not tell how far it got.
    UNKNOWN = "unknown"


#: Stages at which the message may already be with the mailer: only the
#: mailer's own answer (an HTTP status, an error code) can prove otherwise.
MAY_HAVE_LEFT = frozenset({Stage.BODY_SENT, Stage.REQUEST, Stage.ANSWERED})


class Watch(Protocol):
    """The marker a kind attaches to one attempt: how far it got. A marker
    whose class sets ``guards_send = True`` runs ``mailrouter.send_guard``
    itself at the last moment before the request; otherwise the router runs
    it just before the backend's ``send_messages()``."""

    stage: Stage


@dataclass(frozen=True, slots=True)
class Verdict:
    """A mailer's own answer about one message."""

    outcome: Outcome
    #: Names the refused recipients (None if every recipient was accepted).
    note: str | None


@dataclass(frozen=True, slots=True)
class TransportNames:
    """Exception class names (anywhere in an error's chain) a kind's HTTP
    client raises, by what they prove."""

    #: Connecting failed: nothing was sent.
    connect_failed: frozenset[str] = frozenset()
    #: Lost while reading the answer: the request may have left.
    lost_after_request: frozenset[str] = frozenset()
    #: The request could not even be addressed or connected. (A TLS error is
    #: not one of them: it may come while reading.)
    never_left: frozenset[str] = frozenset()


class ProbeFailed(MailRouterError):
    """The mailer answered, and said it will not send."""


#: ``ProbeResult.proven`` values, weakest first.
OPENED = "opened"
REACHABLE = "reachable"
AUTHENTICATED = "authenticated"


@runtime_checkable
class LeafKind(Protocol):
    """Everything the router knows about one kind of leaf backend.

    Register an implementation with :func:`mailrouter.leafkinds.register`;
    the first registered kind that ``recognises`` a backend handles it.
    Methods a kind has nothing to say about return None (or the "nothing"
    value documented), and the router falls back to its generic rules.
    """

    #: Short name, shown nowhere but in ``repr`` and tests.
    name: str
    #: Kinds of one family understand the same message attributes (the
    #: Anymail kinds share Anymail's ``merge_data``, ``template_id``, ...).
    family: str
    #: Message attributes only this family understands: a mailer of another
    #: family refuses (as incompatible) a message that sets one.
    exclusive_attributes: tuple[str, ...]
    #: Names of the HTTP client errors this kind's library raises.
    transport: TransportNames

    def recognises(self, backend: Any) -> bool:
        """Whether this kind handles ``backend`` (asked once per class)."""
        ...

    def watch(self, backend: Any) -> Watch | None:
        """Attach (once) a stage marker to an opened backend and reset it for
        the next attempt; None when this backend cannot be watched."""
        ...

    def accepted(self, message: EmailMessage, marker: Watch) -> Verdict | None:
        """The mailer's per-recipient answer for a message its backend counted
        as sent (a refused recipient, an ESP that took none)."""
        ...

    def answered(self, message: EmailMessage, error: BaseException, stage: Stage) -> Verdict | None:
        """The mailer's own answer about a message whose attempt raised
        ``error`` at ``stage`` (None: let the classifier decide)."""
        ...

    def unsent(self, message: EmailMessage, stage: Stage) -> Verdict | None:
        """The mailer's own answer about a message the backend counted as not
        sent although it may have left (None: uncertain)."""
        ...

    def declined(self, message: EmailMessage, stage: Stage) -> bool:
        """Whether a message the backend counted as not sent was declined on
        purpose by the application (Anymail's ``pre_send`` cancelling)."""
        ...

    def reply_outcome(self, error: BaseException, stage: Stage) -> Outcome | None:
        """The outcome of an error carrying the mailer's reply code, decided
        before any stage rule (SMTP replies)."""
        ...

    def answer_outcome(self, error: BaseException) -> Outcome | None:
        """The outcome the mailer's answer carried by ``error`` implies
        (HTTP status, ESP error code), if any."""
        ...

    def error_outcome(self, error: BaseException, stage: Stage) -> Outcome | None:
        """The outcome of one of this kind's own library errors."""
        ...

    def is_set(self, value: Any) -> bool:
        """Whether a message attribute of this family holds a value."""
        ...

    def refusal(self, attribute: str) -> str:
        """Why a mailer of another family refuses a message setting ``attribute``."""
        ...

    def bound_timeout(self, backend: Any, override: float | None, default: float | None) -> None:
        """Bound the backend's network operations: ``override`` replaces its
        own setting; ``default`` fills in where it has none."""
        ...

    def timeout(self, backend: Any) -> float | None:
        """The timeout the backend will send with (after ``bound_timeout``)."""
        ...

    def retries_on_its_own(self, backend: Any) -> tuple[str, str] | None:
        """(why, hint) when the backend resends requests itself, which can send
        a message twice (system check ``mailrouter.W002``); else None."""
        ...

    def probe(self, backend: Any, timeout: float | None) -> tuple[str, str]:
        """(what was proven, detail) for an opened backend: ``OPENED``,
        ``REACHABLE`` or ``AUTHENTICATED``. Raises ProbeFailed when the mailer
        answered that it will not send."""
        ...


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """The error, its causes/contexts, and exceptions wrapped in args/reason.

    HTTP clients wrap their transport's errors in ``args[0]`` and keep the
    real one in ``reason``, not in ``__cause__``.
    """
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                pending.append(linked)
        pending.extend(
            arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)
        )


def class_names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def transport_outcome(error: BaseException, names: TransportNames) -> Outcome | None:
    """HTTP client errors by their cause chain: connect-phase failures mean
    nothing was sent; a read timeout or a connection dropped after the
    request means the ESP may have the message."""
    verdict: Outcome | None = None
    for link in error_chain(error):
        found = class_names(link)
        if found & names.connect_failed:
            return Outcome.NOT_SENT
        if isinstance(link, (ConnectionRefusedError, socket.gaierror)):
            return Outcome.NOT_SENT
        if found & names.lost_after_request:
            verdict = Outcome.UNCERTAIN
    return verdict


def never_left(error: BaseException, names: TransportNames) -> bool:
    """Whether ``error`` proves the request never left: it could not even be
    addressed or connected."""
    return any(
        class_names(link) & names.never_left
        or isinstance(link, (ConnectionRefusedError, socket.gaierror))
        for link in error_chain(error)
    )


_REJECTING_HTTP_STATUSES = frozenset({400, 422})
#: Bad gateway and gateway timeout.
_GATEWAY_STATUSES = frozenset({502, 504})


def classify_http_status(status: int) -> Outcome:
    """Outcome of an ESP API call that answered with HTTP ``status``.

    Only called for errors: a 2xx here means the ESP answered success but the
    response could not be understood, so the ESP probably has the message.
    """
    if 200 <= status < 300:
        return Outcome.UNCERTAIN
    if status == 413:
        # Payload too large: size limits differ between mailers.
        return Outcome.INCOMPATIBLE
    if status in _REJECTING_HTTP_STATUSES:
        return Outcome.REJECTED
    if status in _GATEWAY_STATUSES:
        # A proxy in front of the ESP gave up waiting: the ESP behind it may
        # have stored the message (no ESP we support documents otherwise).
        return Outcome.UNCERTAIN
    # 401/403 (credentials), 404 (wrong domain/endpoint), 408, 429, 5xx:
    # this mailer did not take the message, another one may.
    return Outcome.NOT_SENT


def by_stage(stage: Stage) -> Outcome:
    """Without an answer: lost before the body means not sent, after it (or
    not knowing) uncertain."""
    if stage in (Stage.CONNECT, Stage.ENVELOPE):
        return Outcome.NOT_SENT
    return Outcome.UNCERTAIN


def bound_timeout_attribute(backend: Any, override: float | None, default: float | None) -> bool:
    """Bound a backend that keeps its timeout in a ``timeout`` attribute (as
    Django's and Anymail's do). False if it has none."""
    if not hasattr(backend, "timeout"):
        return False
    if override is not None:
        backend.timeout = override
    elif backend.timeout is None and default is not None:
        backend.timeout = default
    return True


class PlainKind:
    """Defaults for a kind with nothing special to say: subclass it and
    override what your kind knows. Its backend keeps its timeout in a
    ``timeout`` attribute, if anywhere."""

    name = "plain"
    family = "plain"
    exclusive_attributes: tuple[str, ...] = ()
    transport = TransportNames()

    def __repr__(self) -> str:
        return f"<leaf kind {self.name}>"

    def recognises(self, backend: Any) -> bool:
        return False

    def watch(self, backend: Any) -> Watch | None:
        return None

    def accepted(self, message: EmailMessage, marker: Watch) -> Verdict | None:
        return None

    def answered(self, message: EmailMessage, error: BaseException, stage: Stage) -> Verdict | None:
        return None

    def unsent(self, message: EmailMessage, stage: Stage) -> Verdict | None:
        return None

    def declined(self, message: EmailMessage, stage: Stage) -> bool:
        return False

    def reply_outcome(self, error: BaseException, stage: Stage) -> Outcome | None:
        return None

    def answer_outcome(self, error: BaseException) -> Outcome | None:
        return None

    def error_outcome(self, error: BaseException, stage: Stage) -> Outcome | None:
        return None

    def is_set(self, value: Any) -> bool:
        return value is not None

    def refusal(self, attribute: str) -> str:
        return f"message.{attribute} needs a {self.family} mailer"

    def bound_timeout(self, backend: Any, override: float | None, default: float | None) -> None:
        bound_timeout_attribute(backend, override, default)

    def timeout(self, backend: Any) -> float | None:
        value = getattr(backend, "timeout", None)
        return None if value is None else float(value)

    def retries_on_its_own(self, backend: Any) -> tuple[str, str] | None:
        return None

    def probe(self, backend: Any, timeout: float | None) -> tuple[str, str]:
        return OPENED, ""
