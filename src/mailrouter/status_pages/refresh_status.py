"""``manage.py mailrouter refresh-status``: fetch pages now, as a value.

For cron or a periodic task; fetches without the refresh lease.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from ..operations import ConfiguredRouter, OperationRefused, unreachable_reason
from .refresh import refresh_now


def refresh_status(
    routers: Sequence[ConfiguredRouter],
    aliases: Collection[str],
    redact: Callable[[str], str],
) -> list[dict[str, Any]]:
    """Fetch the routers' pages now (those of ``aliases``, or all), store the
    readings: one dict per page (alias, state, worst, error; redacted)."""
    table = routers[0].runtime.table
    for alias in aliases:
        if alias not in table:
            known = ", ".join(sorted(table.entries)) or "(none)"
            raise OperationRefused(
                f"unknown mailer alias {alias!r}; {table.source} defines: {known}", "usage"
            )
    configured = {alias for router in routers for alias in router.config.status_pages}
    missing = [alias for alias in aliases if alias not in configured]
    if missing or not configured:
        raise OperationRefused(
            f"no status page is configured for {', '.join(missing)} (router option "
            "'status_pages')" if missing else "no router has 'status_pages' configured",
            "usage",
        )
    results: list[dict[str, Any]] = []
    done: set[str] = set()
    for router in routers:
        store = router.store
        pages = {
            alias: page for alias, page in router.config.status_pages.items()
            if (not aliases or alias in aliases) and alias not in done
        }
        if store is None or not pages:
            continue
        error = unreachable_reason(store, redact)
        if error is not None:
            raise OperationRefused(error, "unreachable")
        for alias, record in refresh_now(pages, store, router.config.health_settings.clock).items():
            done.add(alias)
            results.append({
                "alias": alias, "state": record.state.value, "worst": record.worst or None,
                "error": redact(record.error) if record.error else None,
            })
    return results
