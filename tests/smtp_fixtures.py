"""Real local SMTP servers for tests (see mailrouter.testing.smtp)."""

from __future__ import annotations

from typing import Any

from mailrouter.testing import FaultySMTPServer

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def smtp_mailer(server: FaultySMTPServer, **options: Any) -> dict[str, Any]:
    """A MAILERS entry for Django's real SMTP backend pointed at ``server``."""
    return {
        "BACKEND": SMTP_BACKEND,
        "OPTIONS": {"host": server.host, "port": server.port, "timeout": 2, **options},
    }
