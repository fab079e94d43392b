"""The per-message fast paths behave exactly like the plain code they replace."""

from __future__ import annotations

import smtplib
from typing import Any
from unittest import mock

import pytest
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.dummy import EmailBackend as DummyBackend
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend

from mailrouter.leafkinds.smtp import leaf_connection
from mailrouter.routing import Candidate, route_candidates
from mailrouter.snapshot import MessageSnapshot

pytestmark = pytest.mark.filterwarnings(
    "ignore:Directly creating EmailBackend instances is deprecated"
)

SMTP_CONNECTION = smtplib.SMTP()  # not connected: only its identity matters


class PropertyConnection(BaseEmailBackend):
    @property
    def connection(self) -> Any:
        return SMTP_CONNECTION


class ClassAttributeConnection(BaseEmailBackend):
    connection = SMTP_CONNECTION


class Proxy(BaseEmailBackend):
    """A wrapper that forwards unknown attributes to an inner backend."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Slotted:
    __slots__ = ()

    def send_messages(self, messages: Any) -> int:
        return 0


def smtp_with_connection() -> SMTPBackend:
    backend = SMTPBackend()
    backend.connection = SMTP_CONNECTION
    return backend


BACKENDS = [
    DummyBackend,
    LocmemBackend,
    SMTPBackend,
    smtp_with_connection,
    PropertyConnection,
    ClassAttributeConnection,
    lambda: Proxy(smtp_with_connection()),
    lambda: Proxy(DummyBackend()),
    Slotted,
    mock.MagicMock,
]


@pytest.mark.parametrize("make", BACKENDS)
def test_leaf_connection_is_getattr(make: Any) -> None:
    backend = make()
    for _ in range(2):  # first call classifies the class, second uses the cache
        assert leaf_connection(backend) is getattr(backend, "connection", None)


def test_route_candidates_are_shared_and_equal_to_fresh_ones() -> None:
    first = route_candidates(("a", "b"))
    assert first is route_candidates(("a", "b"))
    assert first == (Candidate("a"), Candidate("b"))


def test_snapshot_restores_independent_copies_of_nested_containers() -> None:
    message = EmailMessage("s", "b", "f@example.com", ["t@example.com"])
    message.extra_headers = {"X-List": ["one"], "X-Set": {"x"}}
    message.metadata = {"nested": {"k": [1]}}  # type: ignore[attr-defined]
    snapshot = MessageSnapshot(message)
    message.to.append("u@example.com")
    message.extra_headers["X-List"].append("two")
    message.extra_headers["X-Set"].add("y")
    message.metadata["nested"]["k"].append(2)  # type: ignore[attr-defined]
    message.anymail_status = "sent"  # type: ignore[attr-defined]
    snapshot.restore(message)
    assert message.to == ["t@example.com"]
    assert message.extra_headers == {"X-List": ["one"], "X-Set": {"x"}}
    assert message.metadata == {"nested": {"k": [1]}}  # type: ignore[attr-defined]
    assert not hasattr(message, "anymail_status")
    # Restoring again gives the snapshot's values, not the restored objects.
    message.metadata["nested"]["k"].append(3)  # type: ignore[attr-defined]
    snapshot.restore(message)
    assert message.metadata == {"nested": {"k": [1]}}  # type: ignore[attr-defined]
