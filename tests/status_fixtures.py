"""What the status page tests share: scripted mailers a, b, c, a webhook
token, and sending one message through a router to see what it tried."""

from __future__ import annotations

from django.core.mail import EmailMessage

from mailrouter.backend import RouterBackend

MAILERS = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
           for alias in ("a", "b", "c")}
TOKEN = "t0ken-for-the-status-webhook-0123456789"


def send(router: RouterBackend) -> EmailMessage:
    message = EmailMessage("s", "b", "app@example.com", ["u@example.com"])
    router.fail_silently = True
    router.send_messages([message])
    return message


def tried(message: EmailMessage) -> list[tuple[str, str]]:
    return [(a.alias, a.outcome.value) for a in message.mailrouter_attempts]  # type: ignore[attr-defined]
