"""Status pages as a plug-in health source (``mailrouter.health.sources``):
a page saying "down" skips its mailer like an open breaker, "degraded" moves
it behind the healthy candidates; a stale page is handed to the background
refresher, never fetched on the send path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..health.sources import Clock, HealthSource, Slot, SourceStore, register
from .record import effects, slots
from .refresh import schedule
from .settings import StatusPage

if TYPE_CHECKING:
    from ..config import RouterConfig


class StatusPageSource:
    """The status pages of one router's mailers."""

    def __init__(self, pages: Mapping[str, StatusPage]) -> None:
        self._pages, self.slots = slots(pages)

    def effects(
        self, found: Mapping[Slot, Any], now: float, store: SourceStore, clock: Clock
    ) -> tuple[Mapping[str, str], Mapping[str, str]]:
        def stale(page: StatusPage) -> None:
            schedule(page, store, clock)

        return effects(self._pages, found, now, stale)


def source_for(config: RouterConfig) -> HealthSource | None:
    return StatusPageSource(config.status_pages) if config.status_pages else None


register("mailrouter.status_pages", source_for)
