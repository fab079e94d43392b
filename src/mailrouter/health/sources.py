"""Plug-in health sources: what, beside breakers and drains, skips or demotes
a mailer.

A source (ESP status pages are one: ``mailrouter.status_pages`` registers
itself here) keeps its records in the health cache, through the small
key-value API of :class:`SourceStore`. The monitor reads every source's
records in the same ``get_many`` as the breakers (``HealthSource.slots``)
and asks the source what they mean for this batch
(:meth:`HealthSource.effects`): mailers to skip, mailers to try last. The
health package knows sources only through this module; a source module
imports nothing else of ``mailrouter.health``.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..shared_state.registry import on_reset

if TYPE_CHECKING:
    from ..config import RouterConfig


class Level(enum.StrEnum):
    """How bad a mailer (or one component of its ESP) is, in increasing
    order; ``UNKNOWN`` (not read, unreadable, too old) has no effect.

    Levels compare by severity (``Level.DOWN > Level.DEGRADED``), so
    ``max()`` is the worst. ``mailrouter.status_pages.record.PageState`` is
    this enum under its former name.
    """

    OPERATIONAL = "operational"
    #: Degraded, partial outage, delayed, maintenance: tried after the others.
    DEGRADED = "degraded"
    #: Major outage / down: skipped like an open breaker.
    DOWN = "down"
    #: Not fetched yet, unreachable, not understood, or too old: no effect.
    UNKNOWN = "unknown"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Level):
            return self.severity < other.severity
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if isinstance(other, Level):
            return self.severity <= other.severity
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if isinstance(other, Level):
            return self.severity > other.severity
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if isinstance(other, Level):
            return self.severity >= other.severity
        return NotImplemented


_SEVERITY = {Level.UNKNOWN: -1, Level.OPERATIONAL: 0, Level.DEGRADED: 1, Level.DOWN: 2}

#: What routing does with a mailer at each level (logs, ``status``, ``explain``).
EFFECTS: Mapping[Level, str] = {
    Level.DOWN: "skipped like an open circuit",
    Level.DEGRADED: "tried after the healthy candidates",
    Level.OPERATIONAL: "no effect",
    Level.UNKNOWN: "no effect (unknown is never down)",
}

#: (mailer alias, key part): one record of a source in the health cache.
Slot = tuple[str, str]
Clock = Callable[[], float]


class SourceStore(Protocol):
    """The health cache as a source sees it: plain values under a mailer's
    health keys (shared, with the per-process fallback)."""

    def get_value(self, alias: str, part: str) -> Any: ...

    def set_value(self, alias: str, part: str, value: Any, ttl: int | None) -> None: ...

    def add_value(self, alias: str, part: str, value: Any, ttl: int) -> bool:
        """``cache.add``: True for exactly one caller until the key expires."""
        ...


class HealthSource(Protocol):
    """One source's view of a router's mailers."""

    #: The records read with the breakers, in the batch's one round trip.
    slots: tuple[Slot, ...]

    def effects(
        self, found: Mapping[Slot, Any], now: float, store: SourceStore, clock: Clock
    ) -> tuple[Mapping[str, str], Mapping[str, str]]:
        """(aliases to skip → reason, aliases to try last → reason) from the
        records ``found`` (only those stored). No I/O: a source refreshes
        its records off the send path."""
        ...


#: Builds a router's source (None: the router has nothing of this source).
SourceFactory = Callable[["RouterConfig"], "HealthSource | None"]

_factories: dict[str, SourceFactory] = {}
#: id(config) → (config, its sources): a router is built for nearly every
#: ``send_mail()`` from the same validated config.
_built: dict[int, tuple[Any, tuple[HealthSource, ...]]] = {}
_lock = threading.Lock()


def register(name: str, factory: SourceFactory) -> None:
    """Add a kind of health source (``name`` unique: registering again replaces it)."""
    with _lock:
        _factories[name] = factory
        _built.clear()


def unregister(name: str) -> None:
    """Remove a kind of health source registered under ``name`` (if any)."""
    with _lock:
        _factories.pop(name, None)
        _built.clear()


def _forget_built() -> None:
    with _lock:
        _built.clear()


on_reset("mailrouter.health.sources", _forget_built)


def sources_for(config: RouterConfig) -> tuple[HealthSource, ...]:
    """The health sources of the router built from ``config``."""
    known = _built.get(id(config))
    if known is not None:
        return known[1]
    with _lock:
        factories = list(_factories.values())
    sources = tuple(s for s in (factory(config) for factory in factories) if s is not None)
    with _lock:
        if len(_built) > 256:
            _built.clear()
        _built[id(config)] = (config, sources)  # keeps config alive: its id stays its own
    return sources
