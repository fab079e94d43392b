"""Status pages hosted on Sorry™ (``kind: "sorry"``) and Postmark's page
(``kind: "postmark"``), which is one of them with a legacy API behind it.

A Sorry page answers three documents under ``/api/v1/``: ``status``
(``{"page": {"state", "state_text"}}``), ``components`` (``{"components":
[{"id", "name", "state", "parent_id"}]}``) and ``notices`` (``{"notices":
[{"subject", "type", "state", "began_at", "ended_at", ...}]}``). One refresh
fetches the two it needs (the components, or the page state, and the
notices) within the page's ``timeout`` in all, and reads them merged into one
object.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from .fetch import Fetched, FetchError, fetch
from .sources import (
    LegacyPostmarkSource,
    Level,
    Reading,
    StatusSource,
    UnexpectedDocument,
    worst_of,
)

API = "/api/v1/"
#: Postmark's services list before its page moved to Sorry.
LEGACY_SERVICES = "/api/1.0/services"
SUBJECT_CHARS = 80


def api_root(url: str) -> str:
    """The page root of ``url``: the page itself or any URL under its ``/api/``."""
    parts = urlsplit(url)
    path = parts.path
    index = path.find("/api/")
    root = path[:index] if index >= 0 else path
    return urlunsplit((parts.scheme, parts.netloc, root.rstrip("/"), "", ""))


def _get(url: str, deadline: float, allow_http: bool) -> Fetched:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError("timed out (the page's timeout covers all its documents)")
    return fetch(url, timeout=remaining, allow_http=allow_http)


def _first_endpoint(components: Sequence[str]) -> str:
    return "components" if components else "status"


class SorrySource(StatusSource):
    """A Sorry™ status page, given its root or any of its ``/api/v1/`` URLs.

    ``components`` match a component by name or id, case-insensitively; a
    child component (``parent_id``) counts for its parent. Without
    components, the page's own ``state`` and every active notice count; with
    components, only those components, their children and the active notices
    that name them. An active notice (``ended_at`` null) of type
    ``unplanned``, or a ``planned`` one under way, makes what it names at
    least degraded; ``general`` notices are news, not state.
    """

    statuses: ClassVar[Mapping[str, Level]] = {
        "operational": Level.OPERATIONAL,
        "degraded": Level.DEGRADED,
        "partial_outage": Level.DEGRADED,
        "maintenance": Level.DEGRADED,
        "outage": Level.DOWN,
    }

    def fetch(
        self, url: str, components: Sequence[str], *, timeout: float, etag: str | None,
        allow_http: bool,
    ) -> Fetched:
        deadline = time.monotonic() + timeout
        return Fetched(self.documents(api_root(url), components, deadline, allow_http))

    def documents(
        self, root: str, components: Sequence[str], deadline: float, allow_http: bool,
        first: Fetched | None = None,
    ) -> dict[str, Any]:
        """The documents a reading of ``components`` needs, merged; ``first``:
        the first of them, when already fetched."""
        merged: dict[str, Any] = {}
        for endpoint in (_first_endpoint(components), "notices"):
            fetched = first or _get(f"{root}{API}{endpoint}", deadline, allow_http)
            first = None
            document = fetched.document
            if not isinstance(document, Mapping):
                raise UnexpectedDocument(f"Sorry's {API}{endpoint} is not a JSON object")
            merged.update(document)
        return merged

    def read(self, document: Any, components: Sequence[str]) -> Reading:
        if not isinstance(document, Mapping):
            raise UnexpectedDocument("not a Sorry status document (expected a JSON object)")
        notices = document.get("notices")
        if not isinstance(notices, list):
            raise UnexpectedDocument("no 'notices' list on the page")
        active = [n for n in notices if isinstance(n, Mapping) and _active(n)]
        if components:
            return self._components(document.get("components"), components, active)
        page = document.get("page")
        state = page.get("state") if isinstance(page, Mapping) else None
        readings = [Reading(self.level(state, "the page"), f"page: {state}")]
        readings += [Reading(Level.DEGRADED, _notice_text(notice)) for notice in active]
        return worst_of(readings)

    def _components(
        self, raw: Any, wanted: Sequence[str], active: list[Mapping[str, Any]]
    ) -> Reading:
        if not isinstance(raw, list):
            raise UnexpectedDocument("no 'components' list on the page")
        entries = [c for c in raw if isinstance(c, Mapping) and isinstance(c.get("name"), str)]
        named: dict[str, Mapping[str, Any]] = {}
        for component in entries:
            for key in (component["name"], str(component.get("id"))):
                named.setdefault(key.casefold(), component)
        readings = []
        for name in wanted:
            found = named.get(name.casefold())
            if found is None:
                raise UnexpectedDocument(f"component {name!r} is not on the page")
            for member in _family(found, entries):
                label, state = member["name"], member.get("state")
                readings.append(
                    Reading(self.level(state, f"component {label!r}"), f"{label}: {state}")
                )
                readings += [Reading(Level.DEGRADED, f"{label}: {_notice_text(notice)}")
                             for notice in active if _names(notice, member)]
        return worst_of(readings)


def _family(
    component: Mapping[str, Any], entries: list[Mapping[str, Any]]
) -> Iterator[Mapping[str, Any]]:
    """The component, then its descendants (a child counts for its parent)."""
    seen: set[int] = set()
    pending = [component]
    while pending:
        member = pending.pop(0)
        if id(member) in seen:
            continue  # a parent_id cycle in a broken document
        seen.add(id(member))
        yield member
        key = member.get("id")
        if key is not None:
            pending += [c for c in entries if c.get("parent_id") == key]


def _active(notice: Mapping[str, Any]) -> bool:
    if notice.get("ended_at") is not None:
        return False
    kind = notice.get("type")
    if kind == "unplanned":
        return True
    # A planned notice is maintenance: it counts while under way, not while scheduled.
    return kind == "planned" and (
        notice.get("state") == "underway" or notice.get("timeline_state") == "present"
    )


def _names(notice: Mapping[str, Any], component: Mapping[str, Any]) -> bool:
    keys = {str(component.get("id")).casefold(), str(component["name"]).casefold()}
    named = [item for key in ("components", "component_ids")
             if isinstance(listed := notice.get(key), list) for item in listed]
    for item in named:
        values = [item.get("id"), item.get("name")] if isinstance(item, Mapping) else [item]
        if any(v is not None and str(v).casefold() in keys for v in values):
            return True
    return False


def _notice_text(notice: Mapping[str, Any]) -> str:
    subject = str(notice.get("subject") or "untitled")[:SUBJECT_CHARS]
    return f"{notice.get('type')} notice {subject!r}"


class PostmarkSource(SorrySource):
    """Postmark's status page: Sorry's API (given the page root or any of its
    ``/api/v1/`` URLs), or the legacy ``/api/1.0/services`` list (given its
    URL, or when the page answers only that). Components also match a legacy
    service's path slug (``smtp`` for ``/services/smtp``)."""

    legacy: ClassVar[LegacyPostmarkSource] = LegacyPostmarkSource()

    def fetch(
        self, url: str, components: Sequence[str], *, timeout: float, etag: str | None,
        allow_http: bool,
    ) -> Fetched:
        if "/api/1.0/" in urlsplit(url).path:
            return fetch(url, timeout=timeout, etag=etag, allow_http=allow_http)
        deadline = time.monotonic() + timeout
        root = api_root(url)
        try:
            first = _get(f"{root}{API}{_first_endpoint(components)}", deadline, allow_http)
        except FetchError as error:
            # A page without Sorry's API: Postmark's legacy one, in the time left.
            try:
                return Fetched(_get(root + LEGACY_SERVICES, deadline, allow_http).document)
            except FetchError as legacy_error:
                raise FetchError(f"{error}; legacy API: {legacy_error}") from None
        return Fetched(self.documents(root, components, deadline, allow_http, first))

    def read(self, document: Any, components: Sequence[str]) -> Reading:
        if isinstance(document, list) or (
            isinstance(document, Mapping) and "services" in document
        ):
            return self.legacy.read(document, components)
        return super().read(document, components)
