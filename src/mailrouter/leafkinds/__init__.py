"""Leaf kinds: everything the router knows about one kind of leaf backend.

One module per kind: ``smtp`` (smtplib), ``anymail_requests`` (Anymail's ESP
backends over requests, and what every Anymail backend shares), ``boto``
(Anymail's Amazon SES, through boto3) and ``generic`` (any other Django
backend). A kind recognises its backends, watches how far an attempt got,
reads the mailer's answers and errors into outcomes, bounds the backend's
timeout, says whether it resends on its own and probes it (the
``LeafKind`` protocol in ``base``). Every touch of a third-party library's
private attribute lives in these modules.

A third-party backend gets its own kind with :func:`register`; the first
registered kind that recognises a backend handles it (yours before the
built-in ones). Outside this package, no module of the router imports or names
smtplib, requests, urllib3, botocore, boto3 or Anymail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from django.core.mail import EmailMessage

from ..outcomes import Outcome
from . import base
from .anymail_requests import ANYMAIL_REQUESTS
from .base import (
    AUTHENTICATED,
    MAY_HAVE_LEFT,
    OPENED,
    REACHABLE,
    LeafKind,
    PlainKind,
    ProbeFailed,
    Stage,
    TransportNames,
    Verdict,
    Watch,
    by_stage,
    class_names,
    classify_http_status,
    error_chain,
)
from .boto import BOTO
from .generic import GENERIC
from .smtp import SMTP

__all__ = [
    "ANYMAIL_REQUESTS",
    "AUTHENTICATED",
    "BOTO",
    "BY_CLASS",
    "GENERIC",
    "MAY_HAVE_LEFT",
    "OPENED",
    "REACHABLE",
    "SMTP",
    "LeafKind",
    "PlainKind",
    "ProbeFailed",
    "Resolved",
    "Stage",
    "TransportNames",
    "Verdict",
    "Watch",
    "answer_outcome",
    "by_stage",
    "class_names",
    "classify_http_status",
    "declined",
    "error_chain",
    "error_outcome",
    "kind_for",
    "kinds",
    "never_left",
    "refusal",
    "register",
    "reply_outcome",
    "resolve",
    "transport_outcome",
    "unregister",
]

#: Most specific first: Amazon SES is an Anymail backend too, and every
#: backend is a generic one.
_BUILT_IN: tuple[LeafKind, ...] = (SMTP, BOTO, ANYMAIL_REQUESTS, GENERIC)
_registered: list[LeafKind] = []
_kinds: tuple[LeafKind, ...] = _BUILT_IN


class Resolved(NamedTuple):
    """What a backend class is to the router: its kind, and the message
    attributes it refuses (each with the kind that owns it)."""

    kind: LeafKind
    refused: tuple[tuple[str, LeafKind], ...]
    #: A router (nested): it passes the message on, its own leaves judge it.
    router: bool


#: Per backend class. Read directly on the send path (a dict lookup, no call):
#: ``BY_CLASS.get(type(backend)) or resolve(backend)``.
BY_CLASS: dict[type, Resolved] = {}
_transport = TransportNames()


def register(kind: LeafKind) -> None:
    """Handle the backends ``kind`` recognises with it (before the built-in
    kinds and the kinds registered earlier). Registering it again moves it first."""
    if not isinstance(kind, LeafKind):
        raise TypeError(f"{kind!r} does not implement mailrouter.leafkinds.LeafKind")
    if kind in _registered:
        _registered.remove(kind)
    _registered.insert(0, kind)
    _changed()


def unregister(kind: LeafKind) -> None:
    """Undo :func:`register` (for tests)."""
    if kind in _registered:
        _registered.remove(kind)
        _changed()


def kinds() -> tuple[LeafKind, ...]:
    """Every kind, in the order they are asked."""
    return _kinds


def _changed() -> None:
    global _kinds, _transport
    _kinds = (*_registered, *_BUILT_IN)
    BY_CLASS.clear()
    _transport = TransportNames(
        frozenset().union(*(k.transport.connect_failed for k in _kinds)),
        frozenset().union(*(k.transport.lost_after_request for k in _kinds)),
        frozenset().union(*(k.transport.never_left for k in _kinds)),
    )


_changed()


def resolve(backend: Any, *, router: bool = False) -> Resolved:
    """Decide (once per class) the kind of ``backend`` and what it refuses
    (nothing, for a ``router``)."""
    kind = next(k for k in _kinds if k.recognises(backend))
    # Each attribute once, owned by the first kind of another family naming it.
    refused: dict[str, LeafKind] = {}
    if not router:
        for other in _kinds:
            if other.family != kind.family:
                for attribute in other.exclusive_attributes:
                    refused.setdefault(attribute, other)
    resolved = BY_CLASS[type(backend)] = Resolved(kind, tuple(refused.items()), router)
    return resolved


def kind_for(backend: Any) -> LeafKind:
    """The kind that handles ``backend``."""
    return (BY_CLASS.get(type(backend)) or resolve(backend)).kind


def refusal(resolved: Resolved, message: EmailMessage) -> str | None:
    """Why a backend cannot send ``message`` as it is: it sets an attribute
    only another family of mailers understands (None if it does not). The send
    path runs the same loop inline."""
    for attribute, owner in resolved.refused:
        value = getattr(message, attribute, None)
        if value is not None and owner.is_set(value):
            return owner.refusal(attribute)
    return None


def declined(message: EmailMessage, stage: Stage) -> bool:
    """Whether any kind recognises a send declined on purpose by the
    application (a nested router's leaf may have declined it)."""
    return any(kind.declined(message, stage) for kind in _kinds)


# -- For the classifier: the kinds' rules, in order ---------------------------------


def _first(ask: Callable[[LeafKind], Outcome | None]) -> Outcome | None:
    """The first kind's answer that is not None."""
    for kind in _kinds:
        outcome = ask(kind)
        if outcome is not None:
            return outcome
    return None


def reply_outcome(error: BaseException, stage: Stage) -> Outcome | None:
    """An error carrying the mailer's reply code (SMTP)."""
    return _first(lambda kind: kind.reply_outcome(error, stage))


def answer_outcome(error: BaseException) -> Outcome | None:
    """The outcome the mailer's answer carried by ``error`` implies, if any."""
    return _first(lambda kind: kind.answer_outcome(error))


def error_outcome(error: BaseException, stage: Stage) -> Outcome | None:
    """One of a kind's own library errors."""
    return _first(lambda kind: kind.error_outcome(error, stage))


def transport_outcome(error: BaseException) -> Outcome | None:
    """HTTP client errors (any kind's) by their cause chain."""
    return base.transport_outcome(error, _transport)


def never_left(error: BaseException) -> bool:
    """Whether ``error`` proves the request never left (any kind's client)."""
    return base.never_left(error, _transport)
