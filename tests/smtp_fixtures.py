"""Real local SMTP servers for tests (see mailrouter.testing.smtp)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailrouter.testing import FaultySMTPServer

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def smtp_mailer(server: FaultySMTPServer, **options: Any) -> dict[str, Any]:
    """A MAILERS entry for Django's real SMTP backend pointed at ``server``."""
    return {
        "BACKEND": SMTP_BACKEND,
        "OPTIONS": {"host": server.host, "port": server.port, "timeout": 2, **options},
    }


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., FaultySMTPServer]]:
    started: list[FaultySMTPServer] = []

    def start(**kwargs: Any) -> FaultySMTPServer:
        server = FaultySMTPServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
