"""Keep the router working in your own test suite.

Django's test environment swaps the mail configuration for its locmem
backend: Django 6.1 replaces every ``MAILERS`` entry (the router included),
Django 5.2/6.0 replace ``EMAIL_BACKEND``. Routing is then silently bypassed.

* :func:`keep_routing` (decorator for a test function or class, with or
  without parentheses, or a context manager) restores the router's
  configuration and makes every leaf mailer :class:`LocmemMailer`, Django's
  locmem backend that records its alias: ``mail.outbox`` then shows which
  leaf took each message (``sent_using``) and what the router did
  (``mailrouter_route``, ``mailrouter_status``, ``mailrouter_attempts``).
* :class:`RoutingTestRunner` does the same for a whole ``manage.py test`` run
  (``TEST_RUNNER = "mailrouter.testing.RoutingTestRunner"``).

Health (breakers), drains, status page records and rate budgets live in
per-process memory under both, emptied before every test: the configured
``health["cache"]`` (a production Redis) is neither read nor written, so an
operator's drain there does not leak into tests and tests open no breaker
that production processes see. ``keep_routing(shared_state=True)`` keeps the
configured cache for a test that wants it.
* :func:`mailer_fails` makes one leaf fail with a chosen outcome kind, through
  the router's real classifier and health tracking.
"""

from __future__ import annotations

import copy
import smtplib
import threading
import unittest
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, overload

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
from ..shared_state.registry import reset as reset_state

#: The ``BACKEND`` every leaf gets under :func:`keep_routing`.
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
    it exactly as in production. Needs :func:`keep_routing` (the leaf must
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
    """The mailer table :func:`keep_routing` applies (routers kept, leaves locmem)."""
    applied = routing_settings()
    if "MAILERS" in applied:
        table: Mapping[str, Any] = applied["MAILERS"]
        return table
    legacy_table: Mapping[str, Any] = applied["MAILROUTER"]["MAILERS"]
    return legacy_table


def _without_shared_cache(options: Any) -> Any:
    """Router OPTIONS whose health state (breakers, drains, status page
    records in ``health["cache"]``, rate budgets in ``rate_limits_cache``)
    lives in per-process memory instead of the configured caches."""
    if not isinstance(options, Mapping):
        return options
    options = {k: v for k, v in options.items() if k != "rate_limits_cache"}
    health = options.get("health")
    if not isinstance(health, Mapping) or "cache" not in health:
        return options
    return {**options, "health": {k: v for k, v in health.items() if k != "cache"}}


def _leaves_to_locmem(table: Mapping[str, Any], shared_state: bool) -> dict[str, Any]:
    """Routers keep their entry (their health state in per-process memory
    unless ``shared_state``); every other mailer becomes a LocmemMailer."""
    routed: dict[str, Any] = {}
    for alias, entry in table.items():
        if not (isinstance(entry, Mapping) and _is_router(entry.get("BACKEND"))):
            routed[alias] = {"BACKEND": LOCMEM_MAILER}
        elif shared_state or "OPTIONS" not in entry:
            routed[alias] = entry
        else:
            routed[alias] = {**entry, "OPTIONS": _without_shared_cache(entry["OPTIONS"])}
    return routed


def _replaced_by_test_environment(name: str) -> Any:
    """The value of ``name`` before Django's test environment replaced it."""
    saved = getattr(django.test.utils._TestState, "saved_data", None)
    return getattr(saved, name, None)


#: id(a setting value keep_routing applied) → (that value, the value it was
#: made from): a nested keep_routing (a decorated test under the runner)
#: starts again from what the project configured, not from the applied copy.
_originals: dict[int, tuple[Any, Any]] = {}


def _configured(value: Any) -> Any:
    known = _originals.get(id(value))
    return known[1] if known is not None and known[0] is value else value


def routing_settings(*, shared_state: bool = False) -> dict[str, Any]:
    """The settings :func:`keep_routing` applies, computed from the current
    ones (or, where Django's test environment replaced them, the originals)."""
    if django.VERSION >= (6, 1) and hasattr(settings, "MAILERS"):
        current = _configured(getattr(settings, "MAILERS"))  # noqa: B009 (not in older stubs)
        if not any(
            isinstance(entry, Mapping) and _is_router(entry.get("BACKEND"))
            for entry in current.values()
        ):
            current = _replaced_by_test_environment("mailers") or current
        return {"MAILERS": _leaves_to_locmem(current, shared_state)}
    backend = settings.EMAIL_BACKEND
    if not _is_router(backend):
        backend = _replaced_by_test_environment("email_backend") or backend
    if not _is_router(backend):
        raise ImproperlyConfigured(
            "keep_routing: no router is configured (a MAILERS entry or EMAIL_BACKEND "
            f"{ROUTER_BACKEND!r})"
        )
    legacy = dict(_configured(getattr(settings, "MAILROUTER", None)) or {})
    legacy["MAILERS"] = _leaves_to_locmem(legacy.get("MAILERS") or {}, shared_state)
    if not shared_state and "OPTIONS" in legacy:
        legacy["OPTIONS"] = _without_shared_cache(legacy["OPTIONS"])
    return {"EMAIL_BACKEND": backend, "MAILROUTER": legacy}


def reset_routing_state() -> None:
    """Forget every per-process health record, drain, status page record and
    rate budget (all of :func:`mailrouter.testing.reset_state`): what
    :func:`keep_routing` and :class:`RoutingTestRunner` do before each test,
    so test order never matters."""
    reset_state()


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


class KeepRouting(TestContextDecorator):
    """What :func:`keep_routing` returns: a context manager and decorator."""

    def __init__(self, *, shared_state: bool = False) -> None:
        super().__init__()
        self.shared_state = shared_state
        self._active: list[tuple[override_settings, list[int]]] = []

    def enable(self) -> None:
        routed = routing_settings(shared_state=self.shared_state)
        # (EMAIL_BACKEND is left out: Django 6.1 warns when it is read.)
        replaced = [name for name in ("MAILERS", "MAILROUTER") if name in routed]
        current = {name: _configured(getattr(settings, name, None)) for name in replaced}
        override = override_settings(**routed)
        override.enable()
        remembered = []
        for name in replaced:
            _originals[id(routed[name])] = (routed[name], current[name])
            remembered.append(id(routed[name]))
        self._active.append((override, remembered))
        reset_routing_state()
        _connect_receiver()

    def disable(self) -> None:
        _disconnect_receiver()
        override, remembered = self._active.pop()
        override.disable()
        for key in remembered:
            _originals.pop(key, None)
        reset_routing_state()

    def decorate_class(self, cls: Any) -> Any:
        if issubclass(cls, unittest.TestCase):
            return super().decorate_class(cls)
        # A plain (pytest) test class: decorate each test method.
        for name, value in list(vars(cls).items()):
            if name.startswith("test") and callable(value):
                setattr(cls, name, self.decorate_callable(value))
        return cls


Decorated = TypeVar("Decorated", bound=Callable[..., Any])


@overload
def keep_routing(target: Decorated, /) -> Decorated: ...
@overload
def keep_routing(*, shared_state: bool = False) -> KeepRouting: ...
def keep_routing(target: Any = None, /, *, shared_state: bool = False) -> Any:
    """Route as configured, into ``mail.outbox``.

    As a context manager (``with keep_routing(): ...``), or a decorator of a
    test function or a test class (a ``unittest.TestCase`` or a pytest
    class), written ``@keep_routing`` or ``@keep_routing()`` (like
    ``transaction.atomic``). Inside, the router keeps its routes and options,
    every leaf mailer is a :class:`LocmemMailer`, and each message in
    ``mail.outbox`` carries ``sent_using`` (the leaf alias that took it) and
    the router's ``mailrouter_route``, ``mailrouter_status`` and
    ``mailrouter_attempts``.

    Health (breakers), drains, status page records and rate budgets start
    empty for every test (every ``with`` block) and live in per-process
    memory: nothing is read from or written to the configured
    ``health["cache"]``. ``shared_state=True`` uses that cache instead (its
    state is then shared with every process using it, and not reset).
    """
    if target is None:
        return KeepRouting(shared_state=shared_state)
    if not callable(target):
        raise TypeError(
            f"keep_routing() takes a test function or class to decorate, not {target!r}"
        )
    return KeepRouting(shared_state=shared_state)(target)


class _FreshStatePerTest:
    """A test result that empties the routing state when each test starts.

    Wraps whatever result the run uses (Django's, a parallel worker's remote
    result, a debug one) and forwards everything else to it."""

    def __init__(self, result: unittest.TestResult) -> None:
        object.__setattr__(self, "_result", result)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._result, name, value)

    def startTest(self, test: unittest.TestCase) -> None:
        _runner_routing_active()
        reset_routing_state()
        self._result.startTest(test)


class RoutingTestSuite(unittest.TestSuite):
    """The runner's suite: every test starts with empty routing state, in the
    main process and in ``--parallel`` workers alike (each worker runs its
    share of the suite through this class)."""

    def run(self, result: Any, debug: bool = False) -> Any:
        if not isinstance(result, _FreshStatePerTest):
            result = _FreshStatePerTest(result)
        return super().run(result, debug)


_runner_routing: KeepRouting | None = None


def _runner_routing_active() -> None:
    """Keep routing in a process the runner did not set up (a ``--parallel``
    worker started with spawn or forkserver rather than fork)."""
    global _runner_routing
    if _runner_routing is None:
        _runner_routing = KeepRouting()
        _runner_routing.enable()


class RoutingTestRunner(DiscoverRunner):
    """Django's test runner, with :func:`keep_routing` for the whole run:
    ``TEST_RUNNER = "mailrouter.testing.RoutingTestRunner"``. Routing state
    (health, drains, status pages, rate budgets) is emptied before every
    test and never touches the configured health cache."""

    test_suite = RoutingTestSuite

    def setup_test_environment(self, **kwargs: Any) -> None:
        global _runner_routing
        super().setup_test_environment(**kwargs)
        _runner_routing = KeepRouting()
        _runner_routing.enable()

    def run_checks(self, databases: Any) -> None:
        # The checks judge the configured health cache (W103-W105), not the
        # per-test memory the tests use.
        with KeepRouting(shared_state=True):
            super().run_checks(databases)

    def teardown_test_environment(self, **kwargs: Any) -> None:
        global _runner_routing
        if _runner_routing is not None:
            _runner_routing.disable()
            _runner_routing = None
        super().teardown_test_environment(**kwargs)
