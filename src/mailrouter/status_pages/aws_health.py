"""AWS's public current events (``kind: "aws_health"``), for Amazon SES.

AWS publishes no Statuspage; its Health Dashboard reads
``https://health.aws.amazon.com/public/currentevents``: a JSON list (served
UTF-16 with a byte order mark; ``json.loads`` of the bytes reads UTF-16 of
either byte order and UTF-8 alike) of the events open now, each with
``service`` (a slug such as ``ses-eu-west-1``), ``service_name``,
``region_name`` (sometimes ``region_id``), ``status`` (a code as a string)
and ``summary``. An empty list: every service is fine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .sources import Level, Reading, StatusSource, UnexpectedDocument, worst_of

DEFAULT_SERVICES = ("ses",)
SUMMARY_CHARS = 80


class AwsHealthSource(StatusSource):
    """The events of ``services`` in ``region``; other regions and services
    are ignored.

    AWS does not document its status codes, and the public code that reads
    them disagrees on which of ``1`` and ``3`` is the severe one, so every
    open code reads as *degraded* (the mailer is tried after healthy
    candidates, never skipped on a guess); ``0`` (resolved) is operational and
    any other code unknown.
    """

    statuses: ClassVar[Mapping[str, Level]] = {
        "0": Level.OPERATIONAL,
        "1": Level.DEGRADED,
        "2": Level.DEGRADED,
        "3": Level.DEGRADED,
    }

    def __init__(self, region: str, services: Sequence[str] = DEFAULT_SERVICES) -> None:
        self.region = region.casefold()
        self.services = tuple(service.casefold() for service in services)

    def read(self, document: Any, components: Sequence[str]) -> Reading:
        if not isinstance(document, list):
            raise UnexpectedDocument("not an AWS current events document (expected a list)")
        readings = [Reading(Level.OPERATIONAL, f"no open event in {self.region}")]
        for event in document:
            if not isinstance(event, Mapping):
                raise UnexpectedDocument("an event that is not a JSON object")
            if self._watched(event):
                status = event.get("status")
                what = f"{event.get('service_name') or event.get('service')} ({self.region})"
                summary = str(event.get("summary") or "")[:SUMMARY_CHARS]
                readings.append(Reading(self.level(status, f"event of {what}"),
                                        f"{what}: {status} {summary}".rstrip()))
        return worst_of(readings)

    def _watched(self, event: Mapping[str, Any]) -> bool:
        slug = str(event.get("service") or "").casefold()
        name = str(event.get("service_name") or "").casefold()
        for service in self.services:
            if slug == f"{service}-{self.region}":
                return True  # the slug names the region itself
            if (slug == service or name == service or slug.startswith(f"{service}-")) and (
                self._in_region(event)
            ):
                return True
        return False

    def _in_region(self, event: Mapping[str, Any]) -> bool:
        places = (event.get("region_id"), event.get("region_name"))
        return any(isinstance(p, str) and p.casefold() == self.region for p in places)
