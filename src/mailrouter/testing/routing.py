"""Keep the router working in your own test suite.

Django's test environment swaps the mail configuration for its locmem
backend: Django 6.1 replaces every ``MAILERS`` entry (the router included),
Django 5.2/6.0 replace ``EMAIL_BACKEND``. Routing is then silently bypassed.

* :class:`keep_routing` (decorator for a test function or class, or a context
  manager) restores the router's configuration and makes every leaf mailer
  :class:`LocmemMailer`, Django's locmem backend that records its alias:
  ``mail.outbox`` then shows which leaf took each message (``sent_using``)
  and what the router did (``mailrouter_route``, ``mailrouter_status``,
  ``mailrouter_attempts``).
* :class:`RoutingTestRunner` does the same for a whole ``manage.py test`` run
  (``TEST_RUNNER = "mailrouter.testing.RoutingTestRunner"``).
* :func:`mailer_fails` makes one leaf fail with a chosen outcome kind, through
  the router's real classifier and health tracking.
"""

from __future__ import annotations

import copy
import smtplib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import django
import django.test.utils
from django.conf import settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.locmem import EmailBackend as DjangoLocmemBackend
from django.test.runner import DiscoverRunner
from django.test.utils import TestContextDecorator, override_settings
from django.utils.module_loading import import_string

from ..config import is_router_class
from ..outcomes import Outcome

#: The ``BACKEND`` every leaf gets under :class:`keep_routing`.
LOCMEM_MAILER = "mailrouter.testing.routing.LocmemMailer"
ROUTER_BACKEND = "mailrouter.backend.RouterBackend"

_faults: dict[str, Outcome] = {}
_faults_lock = threading.Lock()

class LocmemMailer(DjangoLocmemBackend):
    """Django's locmem backend as a routed leaf.

    Each message is copied to ``mail.outbox`` with ``sent_using`` = this
    leaf's alias (on every Django version), unless :func:`mailer_fails`
    makes this alias fail.
    """

    def __init__(self, *args: Any, alias: str | None = None, **kwargs: Any) -> None:
        if django.VERSION >= (6, 1):
            super().__init__(*args, alias=alias, **kwargs)
        else:
            super().__init__(*args, **kwargs)
        self.alias = alias

    def open(self) -> bool | None:
        if self._fault() is Outcome.NOT_SENT:
            # What a mailer that is down does: refuse the connection.
            raise ConnectionRefusedError(
                111, f"Connection refused (mailer_fails({self.alias!r}))"
            )
        return super().open()

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        fault = self._fault()
        if fault is not None:
            raise _failure(fault, self.alias, email_messages)
        sent = 0
        for message in email_messages:
            before = len(mail.outbox)
            sent += super().send_messages([message])
            for outbox_copy in mail.outbox[before:]:
                setattr(outbox_copy, "sent_using", self.alias)  # noqa: B010
                setattr(outbox_copy, "_mailrouter_source", id(message))  # noqa: B010
        return sent

    def _fault(self) -> Outcome | None:
        alias = self.alias
        return _faults.get(alias) if alias is not None else None


def _failure(outcome: Outcome, alias: str | None, messages: Sequence[EmailMessage]) -> Exception:
    """An error a real SMTP mailer raises, which the default classifier reads
    as ``outcome`` (a custom classifier sees the same error)."""
    note = f"(mailer_fails({alias!r}))".encode()
    if outcome is Outcome.NOT_SENT:
        return smtplib.SMTPSenderRefused(421, b"4.3.2 service not available " + note, "")
    if outcome is Outcome.REJECTED:
        recipients = [r for m in messages for r in m.recipients()]
        return smtplib.SMTPRecipientsRefused(
            {r: (550, b"5.1.1 mailbox unavailable " + note) for r in recipients}
        )
    if outcome is Outcome.INCOMPATIBLE:
        return smtplib.SMTPDataError(552, b"5.3.4 message too big for this mailer " + note)
    return smtplib.SMTPServerDisconnected(
        f"connection lost after the message body was sent (mailer_fails({alias!r}))"
    )


@contextmanager
def mailer_fails(alias: str, outcome: Outcome | str = Outcome.NOT_SENT) -> Iterator[None]:
    """Make leaf ``alias`` fail with ``outcome`` (``"not_sent"``, ``"rejected"``,
    ``"incompatible"`` or ``"uncertain"``) while the block runs.

    The leaf raises the error a real SMTP server's failure of that kind
    raises, so the router's classifier, failover and circuit breakers handle
    it exactly as in production. Needs :class:`keep_routing` (the leaf must
    be a :class:`LocmemMailer`).
    """
    kind = Outcome(outcome)
    if kind in (Outcome.ACCEPTED, Outcome.SKIPPED):
        raise ValueError(f"mailer_fails: {kind.value!r} is not a failure a mailer can have")
    table = _routed_table()
    leaves = [name for name, entry in table.items() if entry == {"BACKEND": LOCMEM_MAILER}]
    if alias not in leaves:
        # A fault on a name no leaf has would silently never fire.
        what = "a router" if alias in table else "not a configured mailer"
        raise ValueError(
            f"mailer_fails: {alias!r} is {what}; it takes a leaf mailer alias "
            f"(known leaves: {', '.join(map(repr, leaves)) or 'none'})"
        )
    with _faults_lock:
        previous = _faults.get(alias)
        _faults[alias] = kind
    try:
        yield
    finally:
        with _faults_lock:
            if previous is None:
                _faults.pop(alias, None)
            else:
                _faults[alias] = previous


def _is_router(backend: Any) -> bool:
    if not isinstance(backend, str):
        return False
    try:
        return is_router_class(import_string(backend))
    except ImportError:
        return False


def _routed_table() -> Mapping[str, Any]:
    """The mailer table :class:`keep_routing` applies (routers kept, leaves locmem)."""
    applied = routing_settings()
    if "MAILERS" in applied:
        table: Mapping[str, Any] = applied["MAILERS"]
        return table
    legacy_table: Mapping[str, Any] = applied["MAILROUTER"]["MAILERS"]
    return legacy_table


def _leaves_to_locmem(table: Mapping[str, Any]) -> dict[str, Any]:
    """Routers keep their entry; every other mailer becomes a LocmemMailer."""
    return {
        alias: entry
        if isinstance(entry, Mapping) and _is_router(entry.get("BACKEND"))
        else {"BACKEND": LOCMEM_MAILER}
        for alias, entry in table.items()
    }


def _replaced_by_test_environment(name: str) -> Any:
    """The value of ``name`` before Django's test environment replaced it."""
    saved = getattr(django.test.utils._TestState, "saved_data", None)
    return getattr(saved, name, None)


def routing_settings() -> dict[str, Any]:
    """The settings :class:`keep_routing` applies, computed from the current
    ones (or, where Django's test environment replaced them, the originals)."""
    if django.VERSION >= (6, 1) and hasattr(settings, "MAILERS"):
        current = getattr(settings, "MAILERS")  # noqa: B009 (not in older stubs)
        if not any(
            isinstance(entry, Mapping) and _is_router(entry.get("BACKEND"))
            for entry in current.values()
        ):
            current = _replaced_by_test_environment("mailers") or current
        return {"MAILERS": _leaves_to_locmem(current)}
    backend = settings.EMAIL_BACKEND
    if not _is_router(backend):
        backend = _replaced_by_test_environment("email_backend") or backend
    if not _is_router(backend):
        raise ImproperlyConfigured(
            "keep_routing: no router is configured (a MAILERS entry or EMAIL_BACKEND "
            f"{ROUTER_BACKEND!r})"
        )
    legacy = dict(getattr(settings, "MAILROUTER", None) or {})
    legacy["MAILERS"] = _leaves_to_locmem(legacy.get("MAILERS") or {})
    return {"EMAIL_BACKEND": backend, "MAILROUTER": legacy}


_ANNOTATED = ("mailrouter_route", "mailrouter_status", "mailrouter_attempts")
_receivers = 0
_receivers_lock = threading.Lock()


def _annotate_outbox(sender: Any, message: EmailMessage, **kwargs: Any) -> None:
    """Copy the router's record onto the outbox copy its leaf made."""
    for outbox_copy in reversed(getattr(mail, "outbox", [])):
        if getattr(outbox_copy, "_mailrouter_source", None) == id(message):
            for name in _ANNOTATED:
                setattr(outbox_copy, name, copy.copy(getattr(message, name, None)))
            return


def _connect_receiver() -> None:
    global _receivers
    from ..signals import message_sent

    with _receivers_lock:
        _receivers += 1
        if _receivers == 1:
            message_sent.connect(_annotate_outbox, dispatch_uid="mailrouter.testing.outbox")


def _disconnect_receiver() -> None:
    global _receivers
    from ..signals import message_sent

    with _receivers_lock:
        _receivers -= 1
        if _receivers == 0:
            message_sent.disconnect(dispatch_uid="mailrouter.testing.outbox")


class keep_routing(TestContextDecorator):
    """Route as configured, into ``mail.outbox``.

    As a context manager (``with keep_routing(): ...``), a decorator of a test
    function, or of a test class (a ``unittest.TestCase`` or a pytest class).
    Inside, the router keeps its routes and options, every leaf mailer is a
    :class:`LocmemMailer`, and each message in ``mail.outbox`` carries
    ``sent_using`` (the leaf alias that took it) and the router's
    ``mailrouter_route``, ``mailrouter_status`` and ``mailrouter_attempts``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._active: list[override_settings] = []

    def enable(self) -> None:
        override = override_settings(**routing_settings())
        override.enable()
        self._active.append(override)
        _connect_receiver()

    def disable(self) -> None:
        _disconnect_receiver()
        self._active.pop().disable()

    def decorate_class(self, cls: Any) -> Any:
        from unittest import TestCase

        if issubclass(cls, TestCase):
            return super().decorate_class(cls)
        # A plain (pytest) test class: decorate each test method.
        for name, value in list(vars(cls).items()):
            if name.startswith("test") and callable(value):
                setattr(cls, name, self.decorate_callable(value))
        return cls


class RoutingTestRunner(DiscoverRunner):
    """Django's test runner, with :class:`keep_routing` for the whole run:
    ``TEST_RUNNER = "mailrouter.testing.RoutingTestRunner"``."""

    def setup_test_environment(self, **kwargs: Any) -> None:
        super().setup_test_environment(**kwargs)
        self._routing = keep_routing()
        self._routing.enable()

    def teardown_test_environment(self, **kwargs: Any) -> None:
        self._routing.disable()
        super().teardown_test_environment(**kwargs)
