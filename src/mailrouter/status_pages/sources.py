"""What a status document says about a mailer: :class:`Reading`.

A source turns a parsed JSON document into a reading for the configured
components. It raises :class:`UnexpectedDocument` for anything it does not
understand (unknown shape, unknown status value, a named component missing):
the refresher records that as *unknown*, which never affects routing.

A user's own source is a subclass of :class:`StatusSource` named by dotted
path in the page's ``kind``. A source that needs more than one document
(Sorry's ``/api/v1/`` endpoints) overrides :meth:`StatusSource.fetch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..health.sources import Level
from .fetch import Fetched, fetch

__all__ = ["Level", "Reading", "StatusSource", "UnexpectedDocument", "worst_of"]


@dataclass(frozen=True, slots=True)
class Reading:
    """The worst level among the watched components, and which one it was."""

    level: Level
    #: e.g. ``"Outbound Delivery: major_outage"`` or ``"page: minor"``.
    worst: str


class UnexpectedDocument(ValueError):
    """The document is not what this source understands."""


class StatusSource:
    """Reads one kind of status document.

    Subclasses set ``statuses`` (status value →
    :class:`~mailrouter.health.sources.Level`) and implement :meth:`read`.
    ``components`` are the names the user configured (empty: the page-wide
    status).
    """

    statuses: ClassVar[Mapping[str, Level]] = {}

    def fetch(
        self, url: str, components: Sequence[str], *, timeout: float, etag: str | None,
        allow_http: bool,
    ) -> Fetched:
        """The document :meth:`read` takes, fetched within ``timeout`` seconds in
        all: by default one GET of ``url`` (raise FetchError)."""
        return fetch(url, timeout=timeout, etag=etag, allow_http=allow_http)

    def read(self, document: Any, components: Sequence[str]) -> Reading:
        """The worst reading of ``components`` (or of the page) in the parsed JSON
        ``document``; raise UnexpectedDocument when it does not have the expected shape."""
        raise NotImplementedError

    def level(self, status: Any, what: str) -> Level:
        level = self.statuses.get(status) if isinstance(status, str) else None
        if level is None:
            raise UnexpectedDocument(f"{what} has unknown status {str(status)[:40]!r}")
        return level


def worst_of(readings: Sequence[Reading]) -> Reading:
    # max() keeps the first of equals: the first configured component wins ties.
    return max(readings, key=lambda reading: reading.level)


class StatuspageSource(StatusSource):
    """Atlassian Statuspage API v2 ``summary.json`` (or ``status.json`` for
    the page indicator only).

    Components are matched by name (case-insensitively); a component inside a
    group may also be given as ``"Group - Child"``. Group headers themselves
    are never matched by a plain name, since their status is an aggregate.
    """

    statuses: ClassVar[Mapping[str, Level]] = {
        "operational": Level.OPERATIONAL,
        "degraded_performance": Level.DEGRADED,
        "partial_outage": Level.DEGRADED,
        "under_maintenance": Level.DEGRADED,
        "major_outage": Level.DOWN,
    }
    indicators: ClassVar[Mapping[str, Level]] = {
        "none": Level.OPERATIONAL,
        "minor": Level.DEGRADED,
        "maintenance": Level.DEGRADED,
        "major": Level.DOWN,
        "critical": Level.DOWN,
    }

    def read(self, document: Any, components: Sequence[str]) -> Reading:
        if not isinstance(document, Mapping):
            raise UnexpectedDocument("not a Statuspage document (expected a JSON object)")
        if not components:
            status = document.get("status")
            indicator = status.get("indicator") if isinstance(status, Mapping) else None
            level = self.indicators.get(indicator) if isinstance(indicator, str) else None
            if level is None:
                raise UnexpectedDocument("no known status.indicator on the page")
            return Reading(level, f"page: {indicator}")
        named = self._components_by_name(document.get("components"))
        readings = []
        for name in components:
            component = named.get(name.casefold())
            if component is None:
                raise UnexpectedDocument(f"component {name!r} is not on the page")
            status = component.get("status")
            readings.append(Reading(self.level(status, f"component {name!r}"), f"{name}: {status}"))
        return worst_of(readings)

    def _components_by_name(self, raw: Any) -> dict[str, Mapping[str, Any]]:
        if not isinstance(raw, list):
            raise UnexpectedDocument("no 'components' list on the page")
        entries = [c for c in raw if isinstance(c, Mapping) and isinstance(c.get("name"), str)]
        groups = {c.get("id"): c["name"] for c in entries if c.get("group") is True}
        named: dict[str, Mapping[str, Any]] = {}
        for component in entries:
            if component.get("group") is True:
                continue
            name = component["name"]
            named.setdefault(name.casefold(), component)
            group = groups.get(component.get("group_id"))
            if group is not None:
                named.setdefault(f"{group} - {name}".casefold(), component)
        return named


class LegacyPostmarkSource(StatusSource):
    """Postmark's legacy status API, ``/api/1.0/services``: a list of services
    (or an object holding it under ``services``), each with a ``name``, a
    ``url`` such as ``/services/smtp`` and a ``status`` of UP / MAINTENANCE /
    DELAY / DEGRADED / DOWN. Components are matched case-insensitively against
    a service's name, its path slug (``smtp``), or its ``id`` / ``slug``.
    Without components, the worst of all services. ``kind: "postmark"`` reads
    it when the page answers only this API.
    """

    statuses: ClassVar[Mapping[str, Level]] = {
        "UP": Level.OPERATIONAL,
        "MAINTENANCE": Level.DEGRADED,
        "DELAY": Level.DEGRADED,
        "DEGRADED": Level.DEGRADED,
        "DOWN": Level.DOWN,
    }

    def read(self, document: Any, components: Sequence[str]) -> Reading:
        services = document.get("services") if isinstance(document, Mapping) else document
        if not isinstance(services, list) or not services:
            raise UnexpectedDocument("not a Postmark services document (expected a list)")
        named: dict[str, Mapping[str, Any]] = {}
        for service in services:
            if not isinstance(service, Mapping) or not isinstance(service.get("name"), str):
                raise UnexpectedDocument("a service without a name")
            for key in _service_keys(service):
                named.setdefault(key, service)
        wanted = list(components) or [s["name"] for s in services]
        readings = []
        for name in wanted:
            service = named.get(name.casefold())
            if service is None:
                raise UnexpectedDocument(f"service {name!r} is not on the page")
            status = service.get("status")
            readings.append(Reading(self.level(status, f"service {name!r}"), f"{name}: {status}"))
        return worst_of(readings)


def _service_keys(service: Mapping[str, Any]) -> list[str]:
    keys = [v.casefold() for f in ("name", "id", "slug") if isinstance(v := service.get(f), str)]
    path = service.get("url")
    if isinstance(path, str) and path.strip("/"):
        keys.append(path.rstrip("/").rsplit("/", 1)[-1].casefold())  # "/services/smtp" → smtp
    return keys

