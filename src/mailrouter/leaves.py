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
from .leafkinds import kind_for

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
    has none (Django's SMTP backend waits forever by default). Where a leaf
    keeps its timeout is its kind's knowledge (``mailrouter.leafkinds``)."""
    kind_for(backend).bound_timeout(backend, config.timeouts.get(alias), config.timeout)


def retries_on_its_own(backend: Any) -> tuple[str, str] | None:
    """(why, hint) when a leaf resends requests itself, which can resend a
    message the mailer may already have; None if it does not."""
    return kind_for(backend).retries_on_its_own(backend)
