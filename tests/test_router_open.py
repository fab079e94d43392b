"""What ``open()`` means for a router: it connects nothing; it holds the leaf
connections opened afterwards until ``close()``. A mailer that is down is a
reason to fail over, never an error out of ``open()`` or ``with router:``."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend

from mailrouter.compat import BACKENDS_TAKE_ALIAS

from .messages import kinds, msg
from .smtp_fixtures import smtp_mailer


def test_open_raises_nothing_for_a_mailer_that_is_down_and_sends_fail_over(
    configure: Any, smtp_server: Any
) -> None:
    down, backup = smtp_server(username="u", password="p"), smtp_server()
    router = configure(
        {"down": smtp_mailer(down, username="u", password="wrong"), "backup": smtp_mailer(backup)},
        {"routes": [{"mailers": ["down", "backup"]}]},
    )
    # Django's own SMTP backend raises from open() for this server ...
    options = {"host": down.host, "port": down.port, "username": "u", "password": "wrong",
               "timeout": 2, **({"alias": "down"} if BACKENDS_TAKE_ALIAS else {})}
    django = SMTPBackend(**options)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        django.open()
    # ... the router does not: open() holds, it does not connect.
    assert router.open() is True
    assert router.open() is False  # already holding
    first, second = msg("one"), msg("two")
    assert router.send_messages([first]) == 1 and router.send_messages([second]) == 1
    assert kinds(first) == [("down", "not_sent"), ("backup", "accepted")]
    router.close()
    with router as opened:
        assert opened is router
        assert opened.send_messages([msg("three")]) == 1
    assert len(backup.messages) == 3

