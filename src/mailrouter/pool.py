"""Leaf mailer instances and their open connections, for one router.

One instance per alias per router, created on first use. A connection is
opened once and reused for every message sent through that mailer until the
batch ends (or until the router is closed, if the caller opened it), and is
dropped after a connection-level failure so the next message reconnects.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.mail.backends.base import BaseEmailBackend

from .config import MailerTable, RouterConfig
from .leaves import apply_timeout, build_mailer, raise_errors

logger = logging.getLogger("mailrouter")


class MailerPool:
    """Creates leaf backends lazily and tracks which connections it opened."""

    def __init__(self, config: RouterConfig, table: MailerTable) -> None:
        self._config = config
        self._table = table
        self._backends: dict[str, BaseEmailBackend] = {}
        # Keys: alias, or id() of a legacy per-message connection object.
        self._opened: dict[Any, BaseEmailBackend] = {}

    def backend(self, alias: str) -> BaseEmailBackend:
        backend = self._backends.get(alias)
        if backend is None:
            backend = build_mailer(alias, self._table)
            # A leaf that swallows its errors (``fail_silently`` in its
            # OPTIONS) hides at which stage it failed, and the router must know
            # that to fail over without sending twice. Whether the caller sees
            # errors is the router's own ``fail_silently``.
            raise_errors(backend)
            apply_timeout(backend, alias, self._config)
            self._backends[alias] = backend
        return backend

    def ensure_open(self, key: Any, backend: BaseEmailBackend) -> None:
        """Open the backend's connection unless this pool already did."""
        if key in self._opened:
            return
        created = backend.open()
        # Django's backends return False when the caller had already opened
        # the connection; that connection is the caller's to close.
        if created is not False:
            self._opened[key] = backend

    def discard(self, key: Any, backend: BaseEmailBackend) -> None:
        """Drop a connection after a failure; the next use reconnects."""
        self._opened.pop(key, None)
        try:
            backend.close()
        except Exception as error:  # a broken connection often fails to close
            logger.debug("closing mailer %s after a failure raised %r", key, error)

    def close_all(self) -> None:
        """Close every connection this pool opened; never raises."""
        opened, self._opened = self._opened, {}
        for key, backend in opened.items():
            try:
                backend.close()
            except Exception as error:
                logger.warning(
                    "closing mailer %s failed: %s",
                    key if isinstance(key, str) else type(backend).__name__,
                    type(error).__name__,
                    extra={"mailrouter_alias": key if isinstance(key, str) else None},
                )
