"""Status pages as operators see them: for ``mailrouter status``, ``explain``
and ``refresh-status`` (reads the cache directly; never on the send path)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..health.store import HealthStore
from .record import PageRecord, PageState, current_state, reason
from .settings import StatusPage

EFFECTS = {
    PageState.DOWN: "skipped (like an open circuit)",
    PageState.DEGRADED: "tried after the healthy candidates",
    PageState.OPERATIONAL: "none",
    PageState.UNKNOWN: "none (unknown is never down)",
}


def read_records(pages: Mapping[str, StatusPage], store: HealthStore) -> dict[str, Any]:
    """alias → the stored record (raw), one cache read per page."""
    return {alias: store.get_value(alias, page.record_part) for alias, page in pages.items()}


def page_row(page: StatusPage, raw: Any, now: float) -> dict[str, Any]:
    """One page's state for ``status`` (text not yet redacted)."""
    record = PageRecord.from_dict(raw)
    state = current_state(page, raw, now)
    row: dict[str, Any] = {
        "alias": page.alias,
        "url": page.url,
        "kind": page.kind,
        "components": list(page.components),
        "state": state.value,
        "effect": EFFECTS[state],
        "worst": record.worst if record else None,
        "fetched_at": record.fetched_at if record else None,
        "checked_at": record.checked_at if record else None,
        "last_error": record.error if record else None,
        "refresh": page.refresh,
    }
    if record is None:
        row["last_error"] = "not fetched yet"
    elif state is PageState.UNKNOWN and record.state is not PageState.UNKNOWN:
        row["last_error"] = f"last reading ({record.state.value}) is too old"
    return row


def explain_page(page: StatusPage, raw: Any, now: float) -> tuple[str | None, str | None]:
    """(skip reason, demotion note) the router would act on now."""
    state = current_state(page, raw, now)
    if state is PageState.DOWN:
        return reason(page, raw), None
    if state is PageState.DEGRADED:
        return None, f"{reason(page, raw)}: tried after the healthy candidates"
    return None, None
