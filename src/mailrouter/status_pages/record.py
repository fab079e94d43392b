"""A status page's state as stored in the health cache, and its effect.

Stored under the mailer's health keys
(``mailrouter:health:<alias>:page-<url digest>``) as a plain dict, so the
hot path reads it in the same ``get_many`` as the breakers and decides with
two dict lookups, without building objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..health.sources import Level
from ..shared_state.registry import on_reset
from .settings import StatusPage

#: A page's state is a level of the health scale (the former name).
PageState = Level


@dataclass(frozen=True, slots=True)
class PageRecord:
    """What the last refresh found.

    ``worst`` is the worst watched component as last read successfully;
    ``error`` why the latest refresh could not read the page (state unknown).
    """

    state: PageState
    checked_at: float
    worst: str = ""
    fetched_at: float | None = None
    error: str | None = None
    etag: str | None = None
    #: The URL the record was read from (for ``status``).
    url: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value, "checked_at": self.checked_at, "worst": self.worst,
            "fetched_at": self.fetched_at, "error": self.error, "etag": self.etag,
            "url": self.url,
        }

    @classmethod
    def from_dict(cls, data: Any) -> PageRecord | None:
        if not isinstance(data, Mapping):
            return None
        try:
            fetched = data.get("fetched_at")
            return cls(
                PageState(data["state"]), float(data["checked_at"]), str(data.get("worst", "")),
                None if fetched is None else float(fetched),
                None if data.get("error") is None else str(data["error"]),
                None if data.get("etag") is None else str(data["etag"]),
                str(data.get("url", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


#: Seconds a reading may be dated ahead of this host's clock (ordinary NTP
#: skew between hosts) and still count as fresh. Further ahead, its writer's
#: clock is wrong: the reading is stale and refetched, so how long it is
#: acted on never depends on another host's clock alone.
CLOCK_TOLERANCE = 1.0


def age(raw: Any, now: float) -> float | None:
    """Seconds since the record was checked; None when it has no usable
    check time (missing, or dated in the future beyond ``CLOCK_TOLERANCE``)."""
    checked = raw.get("checked_at") if isinstance(raw, Mapping) else None
    if isinstance(checked, bool) or not isinstance(checked, (int, float)):
        return None
    elapsed = now - checked
    return None if elapsed < -CLOCK_TOLERANCE else elapsed


def current_state(page: StatusPage, raw: Any, now: float) -> PageState:
    """The state routing acts on: unknown when missing, too old or dated in
    the future."""
    elapsed = age(raw, now)
    if elapsed is None or elapsed > page.stale_after:
        return PageState.UNKNOWN
    try:
        return PageState(str(raw.get("state")))
    except ValueError:
        return PageState.UNKNOWN


def reason(page: StatusPage, raw: Any) -> str:
    """Why routing acts on the page (``raw``: the stored record, if any)."""
    said = (raw.get("worst") or raw.get("state")) if isinstance(raw, Mapping) else None
    return f"status page {page.host} says {said or 'nothing yet'}"


_NONE: Mapping[str, str] = MappingProxyType({})

Slots = tuple[Mapping[tuple[str, str], StatusPage], tuple[tuple[str, str], ...]]
#: id(pages) → (pages, their slots): a router is built for nearly every
#: ``send_mail()`` from the same configured mapping; index it once.
_slots: dict[int, tuple[Mapping[str, StatusPage], Slots]] = {}
_NO_SLOTS: Slots = (MappingProxyType({}), ())
on_reset("mailrouter.status_pages.record", _slots.clear)


def slots(pages: Mapping[str, StatusPage]) -> Slots:
    """(slot → page, slots) of configured pages, a slot being (alias, record
    key part): what the health read fetches and ``effects`` decides on."""
    if not pages:
        return _NO_SLOTS
    known = _slots.get(id(pages))
    if known is not None:
        return known[1]
    by_slot = {(page.alias, page.record_part): page for page in pages.values()}
    result: Slots = (by_slot, tuple(by_slot))
    if len(_slots) > 256:
        _slots.clear()
    _slots[id(pages)] = (pages, result)  # keeps ``pages`` alive: its id stays its own
    return result


def effects(
    pages: Mapping[tuple[str, str], StatusPage],
    found: Mapping[tuple[str, str], Any],
    now: float,
    stale: Callable[[StatusPage], None],
) -> tuple[Mapping[str, str], Mapping[str, str]]:
    """(aliases to skip → reason, aliases to try last → reason), calling
    ``stale(page)`` for every page due for a refresh. No I/O.

    ``pages`` and ``found`` are keyed by (alias, record key part)."""
    skip: dict[str, str] | None = None
    demote: dict[str, str] | None = None
    for slot, page in pages.items():
        raw: Any = found.get(slot)
        try:
            if (raw["state"] == "operational"
                    and -CLOCK_TOLERANCE <= now - raw["checked_at"] < page.refresh):
                continue  # the common case, decided without building anything
        except (TypeError, KeyError):
            pass
        elapsed = age(raw, now)
        if elapsed is None or elapsed >= page.refresh:
            stale(page)  # due for a refresh, never fetched, or dated in the future
        state = current_state(page, raw, now)
        if state is PageState.DOWN:
            skip = skip or {}
            skip[page.alias] = reason(page, raw)
        elif state is PageState.DEGRADED:
            demote = demote or {}
            demote[page.alias] = reason(page, raw)
    return skip or _NONE, demote or _NONE


def lease_part(page: StatusPage) -> str:
    """Health-store key part held by the one process fetching ``page`` this
    refresh interval (``cache.add``). The record's own part is
    ``StatusPage.record_part``; all of a page's parts derive from it."""
    return f"{page.record_part}:lease"


def hint_part(page: StatusPage) -> str:
    """Held for ``HINT_INTERVAL`` after a webhook hint caused a fetch."""
    return f"{page.record_part}:hint"


def change_part(page: StatusPage, previous_checked_at: float, new: PageState) -> str:
    """Claimed by the one process that announces this change."""
    return f"{page.record_part}:change:{previous_checked_at!r}:{new.value}"
