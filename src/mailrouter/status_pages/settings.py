"""The router options ``status_pages`` and ``status_webhook_token``, validated.

Validation runs with the rest of the router's options (construction and
system checks); every problem names the router, the mailer alias and the key.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.utils.module_loading import import_string

from .aws_health import DEFAULT_SERVICES, AwsHealthSource
from .sorry import PostmarkSource, SorrySource
from .sources import StatuspageSource, StatusSource

#: Keys of one page entry, in documentation order.
PAGE_KEYS = (
    "url", "kind", "components", "region", "services", "refresh", "timeout", "allow_http"
)
#: Keys that only ``kind: "aws_health"`` takes.
AWS_KEYS = ("region", "services")
AWS_HEALTH_URL = "https://health.aws.amazon.com/public/currentevents"
#: ``kind`` values that need no import.
KINDS: Mapping[str, type[StatusSource]] = {
    "statuspage": StatuspageSource,
    "postmark": PostmarkSource,
    "sorry": SorrySource,
    "aws_health": AwsHealthSource,
}
KIND_NAMES = "'statuspage', 'postmark', 'sorry', 'aws_health'"
DEFAULT_REFRESH = 60.0
DEFAULT_TIMEOUT = 3.0
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class StatusPage:
    """One mailer's status page."""

    alias: str
    url: str
    source: StatusSource
    components: tuple[str, ...] = ()
    refresh: float = DEFAULT_REFRESH
    timeout: float = DEFAULT_TIMEOUT
    allow_http: bool = False
    kind: str = "statuspage"

    @property
    def stale_after(self) -> float:
        """How long a stored reading is acted on without a newer one: a few
        missed refreshes (a dead refresher) make it unknown, never stuck down."""
        return 3 * self.refresh + self.timeout

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "?"

    @functools.cached_property
    def record_part(self) -> str:
        """The health-store key part of this page's record. The URL is part
        of it, so a record read from another URL (before a configuration
        change) is never acted on."""
        return "page-" + hashlib.sha256(self.url.encode()).hexdigest()[:12]


def parse_status_pages(
    raw: Any, label: str, is_leaf: Callable[[str], bool], source: str, problems: list[str]
) -> dict[str, StatusPage]:
    """Validate ``status_pages``; append every problem to ``problems``."""
    where = f"{label}: 'status_pages'"
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be a dict of mailer alias → page settings")
        return {}
    pages: dict[str, StatusPage] = {}
    for alias, entry in raw.items():
        entry_where = f"{where}[{alias!r}]"
        if not isinstance(alias, str) or not is_leaf(alias):
            problems.append(
                f"{entry_where}: {alias!r} is not a leaf mailer in {source} "
                "(status pages belong to the mailers a router sends through)"
            )
            continue
        if not isinstance(entry, Mapping):
            problems.append(
                f"{entry_where} must be a dict with 'url' (keys: {', '.join(PAGE_KEYS)})"
            )
            continue
        page = _parse_page(alias, entry, entry_where, problems)
        if page is not None:
            pages[alias] = page
    return pages


def _parse_page(
    alias: str, entry: Mapping[str, Any], where: str, problems: list[str]
) -> StatusPage | None:
    before = len(problems)
    for key in entry:
        if key not in PAGE_KEYS:
            problems.append(f"{where} has unknown key {key!r} (expected: {', '.join(PAGE_KEYS)})")
    allow_http = entry.get("allow_http", False)
    if not isinstance(allow_http, bool):
        problems.append(f"{where}['allow_http'] must be True or False, not {allow_http!r}")
        allow_http = False
    kind = entry.get("kind", "statuspage")
    url = entry.get("url", AWS_HEALTH_URL if kind == "aws_health" else None)
    if not isinstance(url, str) or not url:
        problems.append(f"{where}['url'] is required (the status API's URL)")
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            problems.append(f"{where}['url'] must be an https:// URL")
        elif parts.scheme == "http" and not allow_http:
            problems.append(
                f"{where}['url'] is plain http; use https (or set 'allow_http': True)"
            )
    cls = _parse_kind(kind, where, problems)
    if cls is not None and issubclass(cls, AwsHealthSource):
        source: StatusSource | None = _parse_aws(cls, entry, where, problems)
    else:
        source = cls() if cls is not None else None
        problems += [f"{where}[{key!r}] applies only to kind 'aws_health'"
                     for key in AWS_KEYS if key in entry]
    components = entry.get("components", ())
    if isinstance(components, str):
        components = (components,)
    if not isinstance(components, (list, tuple)) or not all(
        isinstance(c, str) and c for c in components
    ):
        problems.append(f"{where}['components'] must be a list of component names")
        components = ()
    refresh = _seconds(entry, "refresh", DEFAULT_REFRESH, where, problems)
    timeout = _seconds(entry, "timeout", DEFAULT_TIMEOUT, where, problems)
    if len(problems) > before or source is None:
        return None
    assert isinstance(url, str)
    return StatusPage(
        alias, url, source, tuple(components), refresh, timeout, allow_http, str(kind)
    )


def _parse_kind(kind: Any, where: str, problems: list[str]) -> type[StatusSource] | None:
    if not isinstance(kind, str) or not kind:
        problems.append(f"{where}['kind'] must be one of {KIND_NAMES} or a dotted path")
        return None
    cls: Any = KINDS.get(kind)
    if cls is None:
        try:
            cls = import_string(kind)
        except ImportError as error:
            problems.append(
                f"{where}['kind'] {kind!r} is not one of {KIND_NAMES} and cannot be "
                f"imported: {error}"
            )
            return None
    if not (isinstance(cls, type) and issubclass(cls, StatusSource)):
        problems.append(f"{where}['kind'] {kind!r} is not a StatusSource subclass")
        return None
    return cls


def _parse_aws(
    cls: type[AwsHealthSource], entry: Mapping[str, Any], where: str, problems: list[str]
) -> AwsHealthSource | None:
    before = len(problems)
    region = entry.get("region")
    if not isinstance(region, str) or not region.strip():
        problems.append(
            f"{where}['region'] is required for kind 'aws_health' (the SES region, "
            "e.g. 'eu-west-1')"
        )
    services = entry.get("services", DEFAULT_SERVICES)
    if isinstance(services, str):
        services = (services,)
    if not isinstance(services, (list, tuple)) or not services or not all(
        isinstance(s, str) and s for s in services
    ):
        problems.append(f"{where}['services'] must be a list of AWS service names, e.g. ['ses']")
    if "components" in entry:
        problems.append(
            f"{where}['components'] does not apply to kind 'aws_health' (use 'services')"
        )
    if len(problems) > before:
        return None
    assert isinstance(region, str)
    return cls(region.strip(), tuple(services))


def _seconds(
    entry: Mapping[str, Any], name: str, default: float, where: str, problems: list[str]
) -> float:
    value = entry.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        problems.append(f"{where}['{name}'] must be a positive number of seconds, not {value!r}")
        return default
    return float(value)


def parse_webhook_token(raw: Any, label: str, problems: list[str]) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) < MIN_TOKEN_LENGTH or "/" in raw:
        # The value itself is never echoed: it is a secret.
        problems.append(
            f"{label}: 'status_webhook_token' must be a string of at least "
            f"{MIN_TOKEN_LENGTH} characters without '/' (e.g. secrets.token_urlsafe(32))"
        )
        return None
    return raw
