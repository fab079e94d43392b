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
from .leaves import build_leaves
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


def load_runtime(alias: str | None, options: Mapping[str, Any]) -> RouterRuntime:
    key = (alias, repr(sorted(options.items(), key=lambda item: str(item[0]))))
    runtime = _cache.get(key)
    if runtime is None:
        table = load_mailer_table()
        config = parse_router_options(options, alias=alias, table=table)
        redact = build_redactor(table)
        _, problems = build_leaves(config, table, redact)
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


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    if setting in _WATCHED_SETTINGS or setting.startswith("ANYMAIL"):
        clear_cache()


setting_changed.connect(_on_setting_changed, dispatch_uid="mailrouter.runtime")
