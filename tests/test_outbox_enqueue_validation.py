"""The outbox refuses at enqueue what a direct send would refuse before any
I/O, with the error Django raises, and never a message it could never
deliver (a pin to an outbox): nothing is stored, and the caller's transaction
goes on. A router never takes an outbox as a candidate (route or pin).

(PostgreSQL's own limits, NUL and NaN, are in test_outbox_unstorable_values.py.)
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.db import transaction
from django.test.utils import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter.backend import RouterBackend
from mailrouter.compat import HAS_MAILERS
from mailrouter.config import load_mailer_table
from mailrouter.errors import ConfigurationError, MailRouterError
from mailrouter.leaves import build_mailer
from mailrouter.outbox.models import OutboxMessage
from mailrouter.outbox.payload import PayloadError, decode
from mailrouter.testing import FaultySMTPServer
from mailrouter.testing.settings import ROUTER

from .conftest import examples
from .outbox_fixtures import OUTBOX, outbox_settings
from .smtp_fixtures import smtp_mailer

pytestmark = pytest.mark.django_db


@pytest.fixture
def relay(smtp_server: Callable[..., FaultySMTPServer]) -> Iterator[FaultySMTPServer]:
    """A real SMTP server behind a router behind the outbox."""
    server = smtp_server()
    with outbox_settings(
        {"smtp": smtp_mailer(server)}, {"routes": [{"mailers": ["smtp"]}], "health": False}
    ):
        yield server


def outcome(send: Callable[[], Any]) -> Exception | None:
    try:
        send()
    except Exception as error:
        return error
    return None


def message(**changes: Any) -> EmailMessage:
    made = EmailMessage("subject", "body", "app@example.com", ["user@example.com"])
    for name, value in changes.items():
        setattr(made, name, value)
    return made


MESSAGES = {
    "newline in subject": {"subject": "hello\r\nBcc: victim@example.com"},
    "newline in a header": {"extra_headers": {"X-Tag": "a\nb"}},
    "a header value that is no string": {"extra_headers": {"X-Count": 5}},
    "newline in an address": {"to": ["user\n@example.com"]},
    "no address at all": {"to": ["not an address"]},
    "two @": {"to": ["user@host@example.com"]},
    "a local mailbox": {"to": ["webmaster"]},
    "good addresses": {"to": ["Ünï <user@exämple.com>", '"Doe, J." <j@example.com>']},
}


@pytest.mark.parametrize("changes", MESSAGES.values(), ids=MESSAGES)
def test_enqueue_refuses_what_a_direct_send_refuses_before_io_and_stores_nothing(
    relay: FaultySMTPServer, changes: dict[str, Any]
) -> None:
    # Django's SMTP backend to a real server: what a direct send raises.
    leaf = build_mailer("smtp", load_mailer_table())
    direct = outcome(lambda: leaf.send_messages([message(**copy.deepcopy(changes))]))
    stored = message(**changes)
    with transaction.atomic():
        enqueued = outcome(lambda: mail.get_connection().send_messages([stored]))
        mail.get_connection().send_messages([message(subject="after")])
    subjects = list(OutboxMessage.objects.values_list("subject", flat=True))
    if direct is None:
        assert enqueued is None
        assert subjects == ["subject", "after"]
        return
    assert subjects == ["after"]
    assert not hasattr(stored, "outbox_id")
    if "address" in str(direct):
        # Django's SMTP backend reads the addresses before it builds the
        # message; the outbox reads them from the built message: a ValueError
        # either way (BadHeaderError is one).
        assert isinstance(direct, ValueError) and isinstance(enqueued, ValueError), enqueued
    else:
        assert (type(enqueued), str(enqueued)) == (type(direct), str(direct))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"body": "caf\udce9"}, "body"),
        ({"subject": "\ud800"}, "subject"),
        ({"extra_headers": {"X-Tag": "\udfff"}}, "headers['X-Tag']"),
    ],
    ids=["body", "subject", "header"],
)
def test_a_lone_surrogate_is_a_payload_error_naming_the_field(
    relay: FaultySMTPServer, changes: dict[str, Any], field: str
) -> None:
    with transaction.atomic():
        with pytest.raises(PayloadError, match=rf"{re.escape(field)} contains a lone surrogate"):
            mail.get_connection().send_messages([message(**changes)])
        mail.get_connection().send_messages([message(subject="after")])
    assert list(OutboxMessage.objects.values_list("subject", flat=True)) == ["after"]


def test_nan_is_a_payload_error_on_every_database(relay: FaultySMTPServer) -> None:
    from anymail.message import AnymailMessage

    made = AnymailMessage("s", "b", "app@example.com", ["user@example.com"])
    made.metadata = {"score": math.inf}
    with pytest.raises(PayloadError, match=r"metadata\['score'\] is inf"):
        mail.get_connection().send_messages([made])
    assert not OutboxMessage.objects.exists()


def test_payload_error_is_a_mailrouter_error_and_a_value_error() -> None:
    assert issubclass(PayloadError, MailRouterError)
    assert issubclass(PayloadError, ValueError)


# -- an outbox is never a router's candidate ------------------------------------------

needs_mailers = pytest.mark.skipif(
    not HAS_MAILERS, reason="an outbox alias a router could name exists only with MAILERS"
)


def outbox_and_router(route: list[str], smtp: FaultySMTPServer) -> Any:
    return override_settings(MAILERS={
        "default": {"BACKEND": OUTBOX, "OPTIONS": {"mailer": "router"}},
        "router": {"BACKEND": ROUTER, "OPTIONS": {
            "routes": [{"name": "main", "mailers": route}], "health": False,
        }},
        "smtp": smtp_mailer(smtp),
    })


@needs_mailers
def test_a_pin_to_the_outbox_is_refused_at_enqueue(
    smtp_server: Callable[..., FaultySMTPServer],
) -> None:
    with outbox_and_router(["smtp"], smtp_server()):
        pinned = message(mailers=["smtp", "default"])
        with pytest.raises(PayloadError, match=r"mailers names 'default', which is an outbox"):
            mail.mailers["default"].send_messages([pinned])  # type: ignore[attr-defined]
        assert not OutboxMessage.objects.exists()


@needs_mailers
def test_a_router_refuses_a_pin_to_an_outbox_instead_of_storing_it_again(
    smtp_server: Callable[..., FaultySMTPServer],
) -> None:
    # A row stored before the refusal existed reaches the workers' router.
    with outbox_and_router(["smtp"], smtp_server()):
        router = mail.mailers["router"]  # type: ignore[attr-defined]
        assert isinstance(router, RouterBackend)
        pinned = message(mailers="default")
        with pytest.raises(MailRouterError, match=r"names 'default', which is an outbox"):
            router.send_messages([pinned])
        assert not OutboxMessage.objects.exists()


@needs_mailers
def test_a_route_to_the_outbox_fails_at_startup_naming_router_route_and_alias(
    smtp_server: Callable[..., FaultySMTPServer],
) -> None:
    from django.core import checks

    with outbox_and_router(["smtp", "default"], smtp_server()):
        errors = [m for m in checks.run_checks() if m.id == "mailrouter.E001"]
        assert [m.msg for m in errors] == [
            "MAILERS['router']: routes[0] (route 'main'): 'mailers' names 'default', which is "
            "an outbox (mailrouter.outbox.OutboxBackend): each delivery would store the message "
            "again instead of sending it; name the mailers (or the router) the outbox delivers "
            "through"
        ]
        with pytest.raises(ConfigurationError, match="which is an outbox"):
            mail.mailers["router"]  # type: ignore[attr-defined]


# -- property: stored faithfully, or refused before the INSERT ---------------------------

#: Any code point: NUL, newlines and lone surrogates included.
odd_text = st.text(st.characters(exclude_categories=()), max_size=6)
odd_values = st.one_of(
    odd_text, st.floats(), st.sampled_from([math.nan, math.inf]), st.integers(), st.none()
)


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=odd_text, body=odd_text, header=odd_text, score=odd_values)
def test_a_message_is_stored_faithfully_or_refused_without_harm(
    relay: FaultySMTPServer, subject: str, body: str, header: str, score: Any
) -> None:
    from anymail.message import AnymailMessage

    def build() -> AnymailMessage:
        built = AnymailMessage(subject, body, "app@example.com", ["user@example.com"],
                               headers={"X-Tag": header})
        built.metadata = {"score": score}
        return built

    made = build()
    with transaction.atomic():
        try:
            mail.get_connection().send_messages([made])
        except PayloadError as error:
            # Only what no database here can hold, named.
            assert re.search(r"(subject|body|headers\['X-Tag'\]|metadata\['score'\]) "
                             r"(contains a lone surrogate|is (nan|inf|-inf))", str(error))
            assert not hasattr(made, "outbox_id")
        except ValueError as error:
            # Django's own refusal (a line break in a header), as it raises it;
            # never an encoding error (a lone surrogate is a PayloadError).
            assert not isinstance(error, UnicodeError), error
            with pytest.raises(type(error), match=re.escape(str(error))):
                build().message()
            assert not hasattr(made, "outbox_id")
        else:
            row = OutboxMessage.objects.get(pk=made.outbox_id)  # type: ignore[attr-defined]
            stored = decode(row.payload)
            assert (stored.subject, stored.body, stored.extra_headers["X-Tag"]) == (
                subject, body, header)
            assert stored.metadata == {"score": score}  # type: ignore[attr-defined]
            assert not (isinstance(score, float) and not math.isfinite(score))
        # The caller's transaction goes on either way.
        assert mail.get_connection().send_messages([message(subject="after")]) == 1
