"""The durable outbox: ``OutboxBackend`` stores each message as a row in the
caller's database transaction; workers deliver the rows through a router and
record each row's outcome.

Add ``"mailrouter.outbox"`` to ``INSTALLED_APPS`` and configure a mailer with
``"BACKEND": "mailrouter.outbox.OutboxBackend"`` (see the README).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import OutboxBackend

__all__ = ["OutboxBackend"]


#: Why the backend cannot work without its app (system check mailrouter.E111).
NOT_INSTALLED = (
    "mailrouter.outbox.OutboxBackend needs 'mailrouter.outbox' in INSTALLED_APPS "
    "(its table stores the messages)"
)


def __getattr__(name: str) -> Any:
    # This package is also the Django app: importing the backend (and so the
    # models) here would run before the app registry is ready.
    if name == "OutboxBackend":
        from django.apps import apps

        if apps.ready and not apps.is_installed("mailrouter.outbox"):
            # Importing the class must work (configuration code and Django's
            # own checks import every BACKEND); using it must not.
            return _NotInstalledOutbox
        from .backend import OutboxBackend

        return OutboxBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _NotInstalledOutbox:
    """Stands for ``OutboxBackend`` while its app is not installed: the system
    checks report it (mailrouter.E111); constructing it raises."""

    is_mailrouter_outbox = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from ..errors import ConfigurationError

        raise ConfigurationError([NOT_INSTALLED])
