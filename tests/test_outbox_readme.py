"""The outbox guide's settings (docs/guides/outbox.md) are valid: they pass the system checks, build
the backend, and a message sent with them is stored, then delivered by a worker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core import checks, mail
from django.test.utils import override_settings

from mailrouter.compat import HAS_MAILERS
from mailrouter.outbox.models import OutboxMessage, RowStatus
from mailrouter.outbox.worker import drain
from mailrouter.testing import FaultySMTPServer

README = (Path(__file__).resolve().parent.parent / "docs/guides/outbox.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
pytestmark = pytest.mark.django_db


def settings_from(containing: str, server: FaultySMTPServer) -> dict[str, Any]:
    [code] = [block for block in PYTHON_BLOCKS if containing in block]
    # The README's relay, pointed at a local test server.
    code = code.replace('"smtp.example.com", "port": 587, "use_tls": True',
                        f'"{server.host}", "port": {server.port}')
    namespace: dict[str, Any] = {}
    exec(code.replace("# ...", ""), namespace)
    return {k: v for k, v in namespace.items() if k.isupper() and k != "INSTALLED_APPS"}


def problems() -> list[str]:
    return [f"{m.id}: {m.msg}" for m in checks.run_checks()
            if m.id and m.id.startswith("mailrouter") and m.level >= checks.ERROR]


def deliver_through_readme_settings(configured: dict[str, Any], server: FaultySMTPServer) -> None:
    with override_settings(**configured):
        assert problems() == []
        assert mail.send_mail("Order #1", "...", "shop@example.com", ["ann@example.com"]) == 1
        assert not server.messages
        drain(once=True)
    row = OutboxMessage.objects.get()
    assert (row.status, row.sent_using) == (RowStatus.SENT, "smtp")
    assert server.messages[0].message_id == row.message_id


@pytest.mark.skipif(not HAS_MAILERS, reason="MAILERS is Django 6.1+")
def test_outbox_mailers_example(smtp_server: Any) -> None:
    server = smtp_server()
    deliver_through_readme_settings(settings_from('"mailer": "router"', server), server)


def test_outbox_legacy_example(smtp_server: Any) -> None:
    server = smtp_server()
    configured = settings_from('EMAIL_BACKEND = "mailrouter.outbox.OutboxBackend"', server)
    from django.conf import settings

    with override_settings():
        if hasattr(settings, "MAILERS"):
            del settings.MAILERS
        deliver_through_readme_settings(configured, server)
