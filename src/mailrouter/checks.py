"""Django system checks: every configuration problem at startup, not at first send."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from .config import (
    MailerTable,
    backend_class,
    is_router_spec,
    legacy_settings,
    load_mailer_table,
    parse_router_options,
    router_label,
    uses_mailers_setting,
)
from .errors import ConfigurationError
from .redaction import is_overridden


def _routers(table: MailerTable) -> Iterator[tuple[str | None, Mapping[str, Any]]]:
    """Every router configuration in settings, as (alias, OPTIONS)."""
    for alias, spec in table.entries.items():
        if is_router_spec(spec):
            yield alias, spec.options
    if uses_mailers_setting() or not is_overridden("EMAIL_BACKEND"):
        return
    try:
        cls = import_string(settings.EMAIL_BACKEND)
    except ImportError:
        return
    from .backend import RouterBackend

    if isinstance(cls, type) and issubclass(cls, RouterBackend):
        yield None, legacy_settings().get("OPTIONS", {})


@checks.register("mailrouter", checks.Tags.compatibility)
def check_mailrouter(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    try:
        table = load_mailer_table()
    except ConfigurationError as error:
        return [checks.Error(problem, id="mailrouter.E001") for problem in error.problems]
    for alias, spec in table.entries.items():
        if backend_class(spec) is None:
            messages.append(
                checks.Error(
                    f"{table.label(alias)}: BACKEND {spec.backend!r} cannot be imported",
                    id="mailrouter.E002",
                )
            )
    for router_alias, options in _routers(table):
        label = router_label(router_alias, table)
        if not isinstance(options, Mapping):
            messages.append(checks.Error(f"{label}: OPTIONS must be a dict", id="mailrouter.E001"))
            continue
        try:
            config = parse_router_options(options, alias=router_alias, table=table)
        except ConfigurationError as error:
            messages.extend(checks.Error(p, id="mailrouter.E001") for p in error.problems)
            continue
        if all(route.when is not None for route in config.routes):
            messages.append(
                checks.Warning(
                    f"{label}: no route without 'when'; a message that matches no route "
                    "will fail with a configuration error",
                    hint="Add a last route without 'when' as the catch-all.",
                    id="mailrouter.W001",
                )
            )
        messages.extend(_check_leaves(config.routes, table, label))
    return messages


def _check_leaves(routes: Any, table: MailerTable, label: str) -> list[checks.CheckMessage]:
    """Build each leaf once (no I/O) so its own OPTIONS errors surface now."""
    from .pool import build_mailer
    from .runtime import build_redactor

    redact = build_redactor(table)
    messages: list[checks.CheckMessage] = []
    seen: set[str] = set()
    for route in routes:
        for alias in route.mailers:
            if alias in seen or is_router_spec(table[alias]):
                continue
            seen.add(alias)
            try:
                build_mailer(alias, table)
            except Exception as error:
                messages.append(
                    checks.Error(
                        f"{table.label(alias)} (used by {label}, route {route.name!r}) "
                        f"cannot be created: {type(error).__name__}: {redact(str(error))}",
                        id="mailrouter.E003",
                    )
                )
    return messages
