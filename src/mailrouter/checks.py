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
from .pool import build_leaves, retries_on_its_own
from .redaction import is_overridden
from .runtime import build_redactor


def router_options(table: MailerTable) -> Iterator[tuple[str | None, Mapping[str, Any]]]:
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
    elif settings.EMAIL_BACKEND == "mailrouter.outbox.OutboxBackend":
        # The outbox's workers send through MAILROUTER['OPTIONS']'s router
        # unless MAILROUTER['OUTBOX'] names another.
        outbox = legacy_settings().get("OUTBOX") or {}
        if not (isinstance(outbox, Mapping) and outbox.get("mailer")):
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
    for router_alias, options in router_options(table):
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
        redact = build_redactor(table)
        leaves, problems = build_leaves(config, table, redact)
        messages.extend(checks.Error(problem, id="mailrouter.E003") for problem in problems)
        if not problems:
            messages.extend(_self_retrying_leaves(leaves, table))
    return messages


def _self_retrying_leaves(
    leaves: Mapping[str, Any], table: MailerTable
) -> Iterator[checks.CheckMessage]:
    """Leaves that resend on their own defeat at-most-once delivery."""
    for alias, backend in leaves.items():
        if retries_on_its_own(backend):
            yield checks.Warning(
                f"{table.label(alias)}: boto3 retries failed requests itself, read "
                "timeouts included, resending a message the ESP may already have",
                hint='Set OPTIONS {"client_params": {"config": {"retries": '
                '{"total_max_attempts": 1}}}} and let the router fail over.',
                id="mailrouter.W002",
            )
