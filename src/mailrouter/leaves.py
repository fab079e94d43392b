"""Leaf backends: build them exactly as Django would, bound their timeouts, and
check them at startup.

A leaf is a mailer the routes name that is not itself a router. Building one
does no I/O (backends connect in ``open()``), so the system checks and router
construction build every leaf once to surface its own OPTIONS errors early.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any

from django.core.mail.backends.base import BaseEmailBackend
from django.utils.module_loading import import_string

from .compat import BACKENDS_TAKE_ALIAS, mailer_from_mailers_setting, uses_mailers_setting
from .config import MailerTable, RouterConfig, is_router_class, is_router_spec

#: A leaf OPTION the router takes out before building the leaf: the router
#: must see every error to judge the attempt, and its own ``fail_silently``
#: decides what reaches the caller (system check ``mailrouter.W003``).
ROUTER_DECIDES = "fail_silently"


def build_mailer(alias: str, table: MailerTable) -> BaseEmailBackend:
    """Create the backend for a leaf alias exactly as Django would, without
    a ``fail_silently`` in its OPTIONS."""
    spec = table[alias]
    if uses_mailers_setting() and ROUTER_DECIDES not in spec.options:
        return mailer_from_mailers_setting(alias)
    cls = import_string(spec.backend)
    options = {name: value for name, value in spec.options.items() if name != ROUTER_DECIDES}
    if BACKENDS_TAKE_ALIAS or is_router_class(cls):
        options["alias"] = alias
    backend: BaseEmailBackend = cls(**options)
    if getattr(backend, "alias", None) is None:
        setattr(backend, "alias", alias)  # noqa: B010 (Django < 6.1 backends lack it)
    return backend


def route_leaves(config: RouterConfig, table: MailerTable) -> Iterator[tuple[str, str | None]]:
    """(alias, route name) of every leaf the routes name, once each; nested
    routers are left out (they check their own leaves)."""
    seen: set[str] = set()
    for route in config.routes:
        for alias in route.mailers:
            if alias not in seen and not is_router_spec(table[alias]):
                seen.add(alias)
                yield alias, route.name


def build_leaves(
    config: RouterConfig,
    table: MailerTable,
    redact: Callable[[str], str],
    *,
    skip: Collection[str] = (),
) -> tuple[dict[str, BaseEmailBackend], list[str]]:
    """Build every leaf the routes name once (no I/O: backends connect in
    ``open()``), so a leaf's own OPTIONS errors surface at startup, not at the
    first send. Returns the leaves built and the problems of the others;
    the ``skip`` aliases (already reported) are neither."""
    leaves: dict[str, BaseEmailBackend] = {}
    problems: list[str] = []
    for alias, route_name in route_leaves(config, table):
        if alias in skip:
            continue
        try:
            leaves[alias] = build_mailer(alias, table)
        except Exception as error:
            problems.append(
                f"{table.label(alias)} (used by {config.label}, route {route_name!r}) "
                f"cannot be created: {type(error).__name__}: {redact(str(error))}"
            )
    return leaves, problems


def raise_errors(backend: BaseEmailBackend) -> None:
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
