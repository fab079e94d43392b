"""A bug in the message reaches the caller as Django raises it; every
DeliveryError carries the mailer's own exception as its cause."""

from __future__ import annotations

import pickle
import smtplib
from typing import Any

import pytest
from django.core.mail import EmailMessage

from mailrouter.errors import DeliveryError, InvalidMessageError, MailRouterError
from mailrouter.outcomes import MessageStatus

from .conftest import LOCMEM
from .messages import kinds, msg
from .smtp_fixtures import smtp_mailer


def test_an_invalid_address_raises_value_error_even_with_fail_silently(
    configure: Any, smtp_server: Any
) -> None:
    """Django's SMTP backend raises ValueError for it even with fail_silently:
    a bug in the message, not a delivery failure; the batch still goes on."""
    primary, backup = smtp_server(), smtp_server()
    router = configure(
        {"primary": smtp_mailer(primary), "backup": smtp_mailer(backup)},
        {"routes": [{"mailers": ["primary", "backup"]}], "health": False},
    )
    router.fail_silently = True
    bad = msg("bad", "two@example.com, addresses@example.com")
    good = msg("good")
    with pytest.raises(ValueError, match="Invalid address") as raised:
        router.send_messages([bad, good])
    error = raised.value
    assert isinstance(error, InvalidMessageError) and isinstance(error, MailRouterError)
    # Django's own error, unchanged, is the cause.
    assert type(error.__cause__) is ValueError and "Invalid address" in str(error.__cause__)
    assert [f.message for f in error.failures] == [bad] and error.sent == 1
    assert kinds(bad) == [("primary", "rejected")]  # no other mailer tried
    assert bad.mailrouter_status is MessageStatus.REJECTED  # type: ignore[attr-defined]
    assert good.sent_using == "primary" and not backup.messages  # type: ignore[attr-defined]


def test_a_newline_in_a_header_raises_djangos_error_as_cause(configure: Any) -> None:
    router = configure({"x": {"BACKEND": LOCMEM}}, {"routes": [{"mailers": ["x"]}]})
    message = EmailMessage("s", "b", "app@example.com", ["u@example.com"],
                           headers={"X-Note": "one\ntwo"})
    with pytest.raises(ValueError) as raised:
        router.send_messages([message])
    assert isinstance(raised.value, DeliveryError)
    # Django's BadHeaderError (a ValueError; deprecated in 6.1 for ValueError).
    cause = raised.value.__cause__
    assert isinstance(cause, ValueError) and str(cause) in str(raised.value)


def test_a_delivery_error_chains_the_mailers_exception(configure: Any, smtp_server: Any) -> None:
    server = smtp_server(mode="tempfail_rcpt")
    router = configure({"smtp": smtp_mailer(server)}, {"routes": [{"mailers": ["smtp"]}]})
    with pytest.raises(DeliveryError) as raised:
        router.send_messages([msg()])
    assert not isinstance(raised.value, ValueError)
    assert isinstance(raised.value.__cause__, smtplib.SMTPRecipientsRefused)
    # Pickled (task queues): rebuilt from its data; the exception stays behind.
    copy = pickle.loads(pickle.dumps(raised.value))
    assert str(copy) == str(raised.value)
    assert copy.failures[0].attempts == raised.value.failures[0].attempts
    assert copy.failures[0].attempts[0].exception is None


def test_a_delivery_failure_with_fail_silently_still_raises_nothing(
    configure: Any, smtp_server: Any
) -> None:
    server = smtp_server(mode="tempfail_rcpt")
    router = configure({"smtp": smtp_mailer(server)}, {"routes": [{"mailers": ["smtp"]}]})
    router.fail_silently = True
    assert router.send_messages([msg()]) == 0
