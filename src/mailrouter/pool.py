"""Leaf mailer instances and their open connections.

One instance per alias per router, created on first use. A connection is
opened once and reused for every message sent through that mailer until the
batch ends (or until the router is closed, if the caller opened it), and is
dropped after a connection-level failure so the next message reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import django
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.module_loading import import_string

from .config import MailerTable, RouterConfig, uses_mailers_setting

logger = logging.getLogger("mailrouter")

#: Django 6.1 passes ``alias`` to every backend it creates from MAILERS.
BACKENDS_TAKE_ALIAS = django.VERSION >= (6, 1)


def build_mailer(alias: str, table: MailerTable) -> BaseEmailBackend:
    """Create the backend for a leaf alias exactly as Django would."""
    if uses_mailers_setting():
        from django.core.mail import mailers

        backend: BaseEmailBackend = mailers[alias]
        return backend
    spec = table[alias]
    cls = import_string(spec.backend)
    from .backend import RouterBackend

    options = dict(spec.options)
    if BACKENDS_TAKE_ALIAS or issubclass(cls, RouterBackend):
        options["alias"] = alias
    backend = cls(**options)
    if getattr(backend, "alias", None) is None:
        setattr(backend, "alias", alias)  # noqa: B010 (Django < 6.1 backends lack it)
    return backend


def route_leaves(config: RouterConfig, table: MailerTable) -> Iterator[tuple[str, str | None]]:
    """(alias, route name) of every leaf the routes name, once each; nested
    routers are left out (they check their own leaves)."""
    from .config import is_router_spec

    seen: set[str] = set()
    for route in config.routes:
        for alias in route.mailers:
            if alias not in seen and not is_router_spec(table[alias]):
                seen.add(alias)
                yield alias, route.name


def build_leaves(
    config: RouterConfig, table: MailerTable, redact: Callable[[str], str]
) -> tuple[dict[str, BaseEmailBackend], list[str]]:
    """Build every leaf the routes name once (no I/O: backends connect in
    ``open()``), so a leaf's own OPTIONS errors surface at startup, not at the
    first send. Returns the leaves built and the problems of the others."""
    leaves: dict[str, BaseEmailBackend] = {}
    problems: list[str] = []
    for alias, route_name in route_leaves(config, table):
        try:
            leaves[alias] = build_mailer(alias, table)
        except Exception as error:
            problems.append(
                f"{table.label(alias)} (used by {config.label}, route {route_name!r}) "
                f"cannot be created: {type(error).__name__}: {redact(str(error))}"
            )
    return leaves, problems


def leaf_problems(
    config: RouterConfig, table: MailerTable, redact: Callable[[str], str]
) -> list[str]:
    """The problems ``build_leaves`` finds."""
    return build_leaves(config, table, redact)[1]


def _raise_errors(backend: BaseEmailBackend) -> None:
    """Switch off a leaf's own ``fail_silently``. Django 6.1 keeps the base
    class's value in ``_fail_silently`` (reading ``fail_silently`` from it is
    deprecated); backends with their own attribute keep it in ``fail_silently``."""
    state = getattr(backend, "__dict__", {})
    for name in ("fail_silently", "_fail_silently"):
        if state.get(name):
            setattr(backend, name, False)


def apply_timeout(backend: Any, alias: str, config: RouterConfig) -> None:
    """Bound a leaf's network operations: ``timeouts[alias]`` overrides the
    leaf's own setting; the router-wide ``timeout`` fills in where the leaf
    has none (Django's SMTP backend waits forever by default)."""
    override = config.timeouts.get(alias)
    if hasattr(backend, "timeout"):
        if override is not None:
            backend.timeout = override
        elif backend.timeout is None and config.timeout is not None:
            backend.timeout = config.timeout
        return
    boto_config = _boto_config(backend)
    if boto_config is None:
        return
    # boto3 leaves (Anymail's Amazon SES) keep timeouts in a botocore Config;
    # the client is created from it in open(), after this.
    if override is not None:
        limits = type(boto_config)(connect_timeout=override, read_timeout=override)
        backend.client_params["config"] = boto_config.merge(limits)
    elif config.timeout is not None:
        limits = type(boto_config)(connect_timeout=config.timeout, read_timeout=config.timeout)
        backend.client_params["config"] = limits.merge(boto_config)  # the user's values win


def _boto_config(backend: Any) -> Any:
    """The botocore ``Config`` a boto3-based leaf will create its client with."""
    params = getattr(backend, "client_params", None)
    config = params.get("config") if isinstance(params, dict) else None
    return config if hasattr(config, "merge") and hasattr(config, "retries") else None


def retries_on_its_own(backend: Any) -> bool:
    """Whether a boto3-based leaf resends requests itself (botocore's default):
    after a read timeout that resends a message the ESP may already have."""
    config = _boto_config(backend)
    if config is None:
        return False
    retries = config.retries or {}
    if "total_max_attempts" in retries:
        return bool(retries["total_max_attempts"] > 1)
    return bool(retries.get("max_attempts", 1) > 0)


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
            _raise_errors(backend)
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

    def is_open(self, key: Any) -> bool:
        return key in self._opened

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
