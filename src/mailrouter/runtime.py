"""Parsed configuration shared by router instances.

Django creates a new backend instance for nearly every ``send_mail()``; the
validated config, compiled matchers and redactor are built once per distinct
settings and reused, and rebuilt when tests override the settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import (
    MailerTable,
    RouterConfig,
    load_mailer_table,
    parse_router_options,
)
from .errors import ConfigurationError
from .leaves import build_leaves
from .redaction import Redactor, secrets_in, settings_secrets
from .routing import Candidate, RoutingContext
from .shared_state.registry import on_reset


@dataclass(frozen=True)
class RouterRuntime:
    """One router's validated configuration, mailer table and redactor, built once
    per settings and shared by every instance of that router."""

    config: RouterConfig
    table: MailerTable
    redact: Callable[[str], str]
    #: Aliases in the mailer table that are routers themselves.
    routers: frozenset[str] = frozenset()

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every mailer alias any route of this router can use."""
        return tuple(dict.fromkeys(a for route in self.config.routes for a in route.mailers))

    @property
    def leaf_aliases(self) -> tuple[str, ...]:
        """The aliases of ``aliases`` that are mailers, not nested routers."""
        return tuple(alias for alias in self.aliases if alias not in self.routers)

    def routing_context(
        self,
        path: tuple[str | None, ...],
        *,
        is_this_router: Callable[[Any], bool] = lambda connection: False,
        matcher_failed: Callable[[str, Exception], None] = lambda route, error: None,
    ) -> RoutingContext:
        """The ``RoutingContext`` for selecting with this router's config."""
        return RoutingContext(
            routers=self.routers,
            path=path,
            is_this_router=is_this_router,
            nested_config=self.nested_config,
            matcher_failed=matcher_failed,
        )

    def nested_config(self, candidate: Candidate) -> RouterConfig | None:
        """The configuration of a candidate that is a router, else None."""
        connection = candidate.connection
        if connection is not None:
            config = getattr(connection, "config", None)
            return config if isinstance(config, RouterConfig) else None
        if candidate.alias not in self.routers:
            return None
        try:
            return load_runtime(candidate.alias, self.table[candidate.alias].options).config
        except (ConfigurationError, TypeError, AttributeError):
            return None  # reported when it is built; nothing to look into


_cache: dict[tuple[str | None, str], RouterRuntime] = {}
_cache_lock = threading.Lock()


#: (alias, option names and value identities) → (the values, runtime).
#: Django builds a router from the same settings objects for every
#: ``send_mail()``; recognising them by identity skips ``repr()`` of the whole
#: option tree (about 8 µs, more with status pages). The values are kept, so
#: an identity cannot be reused by another object while the entry lives.
_by_identity: dict[tuple[Any, ...], tuple[tuple[Any, ...], RouterRuntime]] = {}


def load_runtime(alias: str | None, options: Mapping[str, Any]) -> RouterRuntime:
    identity = (alias, *((name, id(value)) for name, value in options.items()))
    known = _by_identity.get(identity)
    if known is not None:
        return known[1]
    runtime = _load_runtime(alias, options)
    with _cache_lock:
        if len(_by_identity) > 256:  # settings objects rebuilt over and over (tests)
            _by_identity.clear()
        _by_identity[identity] = (tuple(options.values()), runtime)
    return runtime


def _load_runtime(alias: str | None, options: Mapping[str, Any]) -> RouterRuntime:
    key = (alias, repr(sorted(options.items(), key=lambda item: str(item[0]))))
    runtime = _cache.get(key)
    if runtime is None:
        table = load_mailer_table()
        config = parse_router_options(options, alias=alias, table=table)
        redact = build_redactor(table, options)
        _, problems = build_leaves(config, table, redact)
        if problems:
            raise ConfigurationError(problems)
        runtime = RouterRuntime(config, table, redact, table.routers)
        with _cache_lock:
            _cache[key] = runtime
    return runtime


def build_redactor(table: MailerTable, options: Mapping[str, Any] | None = None) -> Redactor:
    """A redactor that knows every secret configured for these mailers (and
    in the router's own ``options``: status page URLs, the webhook token)."""
    secrets = settings_secrets() | secrets_in(options or {})
    for spec in table.entries.values():
        secrets |= secrets_in(spec.options)
    return Redactor(secrets)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
        _by_identity.clear()


on_reset("mailrouter.runtime", clear_cache)
