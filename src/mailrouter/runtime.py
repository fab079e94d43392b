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

from django.core.signals import setting_changed

from .config import MailerTable, RouterConfig, load_mailer_table, parse_router_options
from .errors import ConfigurationError
from .pool import leaf_problems
from .redaction import Redactor, secrets_in, settings_secrets


@dataclass(frozen=True)
class RouterRuntime:
    config: RouterConfig
    table: MailerTable
    redact: Callable[[str], str]

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every mailer alias any route of this router can use."""
        return tuple(dict.fromkeys(a for route in self.config.routes for a in route.mailers))


_cache: dict[tuple[str | None, str], RouterRuntime] = {}
_cache_lock = threading.Lock()
_WATCHED_SETTINGS = frozenset(
    {"MAILERS", "MAILROUTER", "EMAIL_HOST_PASSWORD", "ANYMAIL", "EMAIL_BACKEND"}
)


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
        redact = build_redactor(table)
        problems = leaf_problems(config, table, redact)
        if problems:
            raise ConfigurationError(problems)
        runtime = RouterRuntime(config, table, redact)
        with _cache_lock:
            _cache[key] = runtime
    return runtime


def build_redactor(table: MailerTable) -> Redactor:
    """A redactor that knows every secret configured for these mailers."""
    secrets = settings_secrets()
    for spec in table.entries.values():
        secrets |= secrets_in(spec.options)
    return Redactor(secrets)


def clear_cache(**_: Any) -> None:
    with _cache_lock:
        _cache.clear()
        _by_identity.clear()


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    if setting in _WATCHED_SETTINGS or setting.startswith("ANYMAIL"):
        clear_cache()


setting_changed.connect(_on_setting_changed, dispatch_uid="mailrouter.runtime")
