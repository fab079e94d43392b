"""Status pages as operators see them: the ``status`` column and ``explain``
verdicts (also ``RouterBackend.explain()``). Reads outside the send path;
used by ``mailrouter.operations``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..health.sources import EFFECTS, SourceStore
from .record import PageRecord, PageState, age, current_state, reason
from .settings import StatusPage

if TYPE_CHECKING:
    from ..operations import CandidateExplanation, ConfiguredRouter, RowExtender

def read_records(pages: Mapping[str, StatusPage], store: SourceStore) -> dict[str, Any]:
    """alias → the stored record (raw), one cache read per page."""
    return {alias: store.get_value(alias, page.record_part) for alias, page in pages.items()}


def page_row(page: StatusPage, raw: Any, now: float) -> dict[str, Any]:
    """One page's state for ``status`` (text not yet redacted)."""
    record = PageRecord.from_dict(raw)
    state = current_state(page, raw, now)
    row: dict[str, Any] = {
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
        when = "dated in the future (its host's clock is ahead)" if age(raw, now) is None else (
            "too old")
        row["last_error"] = f"last reading ({record.state.value}) is {when}"
    return row


def status_extender(redact: Callable[[str], str]) -> RowExtender:
    """Adds ``status_page`` (or None) to each ``mailrouter status`` row."""

    def extend(router: ConfiguredRouter, alias: str, row: dict[str, Any]) -> None:
        page = router.config.status_pages.get(alias)
        store = router.store
        if page is None or store is None or row.get("state") == "unknown":
            row["status_page"] = None
            return
        now = router.config.health_settings.clock()
        view = page_row(page, store.get_value(alias, page.record_part), now)
        view["url"] = redact(view["url"])
        view["last_error"] = redact(view["last_error"]) if view["last_error"] else None
        row["status_page"] = view

    return extend


def explain_pages(
    candidates: Sequence[CandidateExplanation],
    pages: Mapping[str, StatusPage],
    store: SourceStore,
    now: float,
    redact: Callable[[str], str],
) -> list[CandidateExplanation]:
    """Candidates with status page verdicts, in the order the router would
    try them (a mailer whose page says degraded after the others)."""
    relevant = {c.alias: pages[c.alias] for c in candidates if c.alias in pages}
    records = read_records(relevant, store)
    explained = []
    demoted = set()
    for candidate in candidates:
        page = relevant.get(candidate.alias)
        if page is None or candidate.health in ("untracked", "unknown"):
            explained.append(candidate)
            continue
        raw = records[candidate.alias]
        state = current_state(page, raw, now)
        if state is PageState.DOWN and candidate.skip is None:
            candidate = replace(candidate, skip=redact(reason(page, raw)))
        elif state is PageState.DEGRADED:
            demoted.add(candidate.alias)
            note = f"{redact(reason(page, raw))}: {EFFECTS[state]}"
            candidate = replace(candidate, note=f"{candidate.note}; {note}" if candidate.note
                                else note)
        explained.append(candidate)
    return sorted(explained, key=lambda c: c.alias in demoted)
