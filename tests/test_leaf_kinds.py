"""Leaf kinds: what the router relies on in each mail library is still there,
and a kind registered for a third-party backend is used for it.

The first group fails loudly when an upgrade of smtplib, Anymail, requests,
urllib3 or botocore renames something a leaf kind touches (a private
attribute, a wrapped method, an exception class named in a table), instead
of letting stage tracking degrade silently.
"""

from __future__ import annotations

import importlib
import smtplib
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import checks
from django.core.mail import EmailMessage

from mailrouter import leafkinds
from mailrouter.errors import DeliveryError
from mailrouter.leafkinds import PlainKind, Stage, TransportNames, anymail_requests, boto, smtp
from mailrouter.outcomes import Outcome

from . import fakes

# -- What the kinds touch in the installed libraries --------------------------------


def test_smtplib_has_the_methods_the_smtp_kind_wraps() -> None:
    connection = smtplib.SMTP()
    for name in smtp.WATCHED_METHODS:
        assert callable(getattr(connection, name)), f"smtplib.SMTP.{name} is gone"
    assert smtp.watch_connection(connection) is not None


def test_anymail_has_the_steps_messages_and_errors_the_anymail_kinds_use() -> None:
    base = importlib.import_module("anymail.backends.base")
    errors = importlib.import_module("anymail.exceptions")
    message = importlib.import_module("anymail.message")
    for name in anymail_requests.WATCHED_STEPS:
        assert callable(getattr(base.AnymailBaseBackend, name)), f"Anymail lost {name}"
    for name in (
        "AnymailError",
        "AnymailRecipientsRefused",
        "AnymailInvalidAddress",
        "AnymailUnsupportedFeature",
        "AnymailSerializationError",
        "AnymailConfigurationError",
    ):
        assert issubclass(getattr(errors, name), Exception), f"anymail.exceptions.{name}"
    assert anymail_requests.message_class() is message.AnymailMessage
    instance = message.AnymailMessage()
    for name in anymail_requests.MESSAGE_ATTRIBUTES:
        assert hasattr(instance, name), f"AnymailMessage lost {name}"
    unset = instance.template_id
    assert anymail_requests.is_unset(unset) and not anymail_requests.ANYMAIL_REQUESTS.is_set(
        unset
    )


def test_requests_and_urllib3_have_the_pools_the_anymail_kind_swaps() -> None:
    adapters = importlib.import_module("requests.adapters")
    adapter = adapters.HTTPAdapter()
    assert callable(getattr(adapter, anymail_requests.PROXY_MANAGER_FACTORY))
    manager = adapter.poolmanager
    classes = getattr(manager, anymail_requests.POOL_CLASSES)
    assert classes and all(
        hasattr(cls, anymail_requests.CONNECTION_CLASS) for cls in classes.values()
    )
    for cls in classes.values():
        connection = getattr(cls, anymail_requests.CONNECTION_CLASS)
        assert callable(connection.connect) and callable(connection.request)
    assert anymail_requests.install(manager)


def test_botocore_has_the_private_attributes_the_boto_kind_reads() -> None:
    ses = importlib.import_module("anymail.backends.amazon_ses")
    backend = ses.EmailBackend(
        client_params={"region_name": "us-east-1"},
        session_params={"aws_access_key_id": "k", "aws_secret_access_key": "s"},
    )
    assert leafkinds.kind_for(backend) is leafkinds.BOTO
    backend.open()  # creates the client; no network
    try:
        client = backend.client
        http_session = getattr(getattr(client, boto.ENDPOINT), boto.HTTP_SESSION)
        assert hasattr(http_session, boto.POOL_MANAGER), "botocore lost _manager"
        assert isinstance(getattr(http_session, boto.PROXY_POOL_CLASSES), dict)
        assert boto.BOTO.track_transport(backend), "boto3 connections cannot be watched"
        assert hasattr(boto.boto_config(backend), "read_timeout")
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("kind", "modules"),
    [
        (anymail_requests.REQUESTS_TRANSPORT, ("requests.exceptions", "urllib3.exceptions")),
        (boto.BOTO_TRANSPORT, ("requests.exceptions", "urllib3.exceptions", "botocore.exceptions")),
    ],
)
def test_every_transport_error_name_is_a_class_of_the_library(
    kind: TransportNames, modules: tuple[str, ...]
) -> None:
    known = {"RemoteDisconnected", "IncompleteRead"}  # http.client's
    for module in modules:
        known |= {
            name for name, value in vars(importlib.import_module(module)).items()
            if isinstance(value, type)
        }
    names = kind.connect_failed | kind.lost_after_request | kind.never_left
    assert names - known == set()


# -- A kind of one's own ------------------------------------------------------------


class QueueKind(PlainKind):
    """What the router needs to know about ``tests.fakes.QueueBackend``."""

    name = "queue"

    def recognises(self, backend: Any) -> bool:
        return isinstance(backend, fakes.QueueBackend)

    def error_outcome(self, error: BaseException, stage: Stage) -> Outcome | None:
        return Outcome.NOT_SENT if isinstance(error, fakes.QueueFull) else None

    def bound_timeout(self, backend: Any, override: float | None, default: float | None) -> None:
        if override is not None or backend.deadline is None:
            backend.deadline = override if override is not None else default

    def retries_on_its_own(self, backend: Any) -> tuple[str, str] | None:
        if backend.retries:
            return "the queue client resends by itself", "Set OPTIONS retries to 0."
        return None

    def timeout(self, backend: Any) -> float | None:
        return backend.deadline


QUEUE = QueueKind()
QUEUE_MAILERS = {
    "queue": {"BACKEND": "tests.fakes.QueueBackend", "OPTIONS": {"retries": 2}},
    "backup": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
}
OPTIONS = {"routes": [{"mailers": ["queue", "backup"]}], "timeout": 7}


@pytest.fixture
def queue_full() -> Iterator[None]:
    fakes.QueueBackend.full = True
    yield
    fakes.QueueBackend.full = False


@pytest.fixture
def registered() -> Iterator[QueueKind]:
    leafkinds.register(QUEUE)
    yield QUEUE
    leafkinds.unregister(QUEUE)


def _message() -> EmailMessage:
    return EmailMessage("s", "b", "from@example.com", ["to@example.com"])


def test_without_its_kind_a_library_error_is_uncertain_and_not_failed_over(
    configure: Any, queue_full: None
) -> None:
    router = configure(QUEUE_MAILERS, OPTIONS)
    message = _message()
    with pytest.raises(DeliveryError):
        router.send_messages([message])
    assert [a.outcome for a in message.mailrouter_attempts] == [Outcome.UNCERTAIN]


def test_a_registered_kind_reads_its_library_error_and_the_router_fails_over(
    configure: Any, queue_full: None, registered: QueueKind
) -> None:
    from django.core import mail

    router = configure(QUEUE_MAILERS, OPTIONS)
    message = _message()
    assert router.send_messages([message]) == 1
    assert [(a.alias, a.outcome) for a in message.mailrouter_attempts] == [
        ("queue", Outcome.NOT_SENT),
        ("backup", Outcome.ACCEPTED),
    ]
    assert len(mail.outbox) == 1


def test_a_registered_kind_bounds_the_timeout_and_reports_retries(
    configure: Any, registered: QueueKind
) -> None:
    import json
    from io import StringIO

    from django.core.management import call_command

    configure(QUEUE_MAILERS, OPTIONS)
    out = StringIO()
    call_command("mailrouter", "status", "--json", stdout=out)
    rows = {row["alias"]: row for row in json.loads(out.getvalue())["mailers"]}
    # The router's timeout reached the backend's own ``deadline`` through the kind.
    assert (rows["queue"]["timeout"], rows["queue"]["timeout_source"]) == (7, "router timeout")
    warnings = [m for m in checks.run_checks() if m.id == "mailrouter.W002"]
    assert [(w.msg.split(": ", 1)[1], w.hint) for w in warnings] == [
        ("the queue client resends by itself", "Set OPTIONS retries to 0.")
    ]
    assert "'queue'" in warnings[0].msg


def test_register_rejects_what_is_not_a_kind() -> None:
    with pytest.raises(TypeError, match="LeafKind"):
        leafkinds.register(object())  # type: ignore[arg-type]
