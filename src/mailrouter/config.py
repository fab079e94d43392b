"""Settings → validated router configuration.

Everything that can be wrong in settings is found here, at construction time
and by the system checks, and reported with the mailer alias, route and key.
Nothing in this module does network I/O.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from .classify import Classifier, default_classifier
from .compat import HAS_MAILERS, is_overridden, mailers_setting, uses_mailers_setting
from .errors import ConfigurationError
from .health.settings import HealthSettings, parse_health
from .matching import MatcherError, When, compile_when
from .ratelimit import DEFAULT_MAX_WAIT, RateLimit, parse_rate_limits
from .shared_state.aliases import parse_cache_alias
from .status_pages.settings import StatusPage, parse_status_pages, parse_webhook_token
from .strategies import FAILOVER, STRATEGY_KEYS, Strategy, parse_strategy

ROUTER_OPTION_KEYS = (
    "routes", "delivery", "classifier", "timeout", "timeouts", "health",
    "status_pages", "status_webhook_token", "concurrency", "rate_limits", "rate_limits_cache",
    "max_wait",
)
ROUTE_KEYS = ("name", "when", "mailers", *STRATEGY_KEYS)
DEFAULT_TIMEOUT = 30.0
DEFAULT_SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
#: A backend class with this class attribute set to True is a router
#: (``RouterBackend`` and its subclasses): lets configuration code tell routers
#: from leaves without importing the backend, which depends on it.
ROUTER_MARKER = "is_mailrouter"
#: Set to True on ``mailrouter.outbox.OutboxBackend``: an outbox stores what it
#: is given, so a router must never hand it a message (each delivery would
#: store the message again instead of sending it).
OUTBOX_MARKER = "is_mailrouter_outbox"


class Delivery(enum.StrEnum):
    """What to do after an *uncertain* attempt."""

    #: Never resend a message a mailer may have (the default).
    AT_MOST_ONCE = "at_most_once"
    #: Fail over after an uncertain attempt; the message may arrive twice.
    AT_LEAST_ONCE = "at_least_once"


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of ``routes``: the first route whose ``when`` matches (``None``
    matches everything) gives the message its candidate ``mailers``."""

    name: str
    when: When | None
    mailers: tuple[str, ...]
    #: Who is tried first (see ``mailrouter.strategies``).
    strategy: Strategy = FAILOVER


@dataclass(frozen=True, slots=True)
class MailerSpec:
    """One leaf mailer's settings entry (BACKEND + OPTIONS)."""

    alias: str
    backend: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class MailerTable:
    """The mailer aliases the router can route to, and where they came from."""

    entries: Mapping[str, MailerSpec]
    #: "MAILERS" (Django 6.1+) or "MAILROUTER['MAILERS']".
    source: str

    def __contains__(self, alias: object) -> bool:
        return alias in self.entries

    def __getitem__(self, alias: str) -> MailerSpec:
        return self.entries[alias]

    def label(self, alias: str) -> str:
        return f"{self.source}[{alias!r}]"

    @cached_property
    def routers(self) -> frozenset[str]:
        """The aliases whose backend is a router (see ``ROUTER_MARKER``)."""
        return frozenset(alias for alias, spec in self.entries.items() if is_router_spec(spec))

    @cached_property
    def outboxes(self) -> frozenset[str]:
        """The aliases whose backend is an outbox (see ``OUTBOX_MARKER``)."""
        return frozenset(
            alias for alias, spec in self.entries.items()
            if getattr(backend_class(spec), OUTBOX_MARKER, False) is True
        )


@dataclass(frozen=True)
class RouterConfig:
    """One router's validated OPTIONS. ``label`` names it in messages
    (``MAILERS['default']`` or ``MAILROUTER['OPTIONS']``); ``alias`` is None in
    the ``MAILROUTER`` style."""

    label: str
    alias: str | None
    routes: tuple[Route, ...]
    delivery: Delivery = Delivery.AT_MOST_ONCE
    classifier: Classifier = default_classifier
    timeout: float | None = DEFAULT_TIMEOUT
    timeouts: Mapping[str, float] = field(default_factory=dict)
    #: The ``health`` option, validated (see ``mailrouter.health.settings``).
    health_settings: HealthSettings = field(default_factory=HealthSettings)
    #: The ``status_pages`` option: leaf alias → its status page.
    status_pages: Mapping[str, StatusPage] = field(default_factory=dict)
    status_webhook_token: str | None = None
    #: Worker threads per ``send_messages()`` batch (1: the batch is sent serially).
    concurrency: int = 1
    #: Per mailer alias (see ``mailrouter.ratelimit``).
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    #: The ``CACHES`` alias rate budgets live in (default: the health cache;
    #: None: per process).
    rate_limits_cache: str | None = None
    #: Seconds a message may wait for rate-limit budget when every candidate is out of it.
    max_wait: float = DEFAULT_MAX_WAIT


def load_mailer_table() -> MailerTable:
    """Read the leaf mailer definitions from ``MAILERS`` or ``MAILROUTER['MAILERS']``."""
    if uses_mailers_setting():
        raw, source = mailers_setting(), "MAILERS"
    else:
        if getattr(settings, "MAILROUTER", None) is None and legacy_router_in_use():
            # Reported as what it is, not as the empty OPTIONS it leads to.
            raise ConfigurationError([MISSING_MAILROUTER])
        raw, source = legacy_settings().get("MAILERS", {}), "MAILROUTER['MAILERS']"
    if not isinstance(raw, Mapping):
        raise ConfigurationError([f"{source} must be a dict of alias → {{BACKEND, OPTIONS}}"])
    entries = {}
    for alias, entry in raw.items():
        if not isinstance(entry, Mapping):
            raise ConfigurationError([f"{source}[{alias!r}] must be a dict with BACKEND/OPTIONS"])
        options = entry.get("OPTIONS", {})
        if not isinstance(options, Mapping):
            raise ConfigurationError([f"{source}[{alias!r}]['OPTIONS'] must be a dict"])
        entries[alias] = MailerSpec(alias, entry.get("BACKEND", DEFAULT_SMTP_BACKEND), options)
    return MailerTable(entries, source)


#: "OUTBOX" holds the options of an EMAIL_BACKEND outbox (mailrouter.outbox).
LEGACY_KEYS = ("MAILERS", "OPTIONS", "OUTBOX")
OUTBOX_BACKEND = "mailrouter.outbox.OutboxBackend"
MISSING_MAILROUTER = (
    "the MAILROUTER setting is missing: EMAIL_BACKEND is the router, which takes its "
    "mailers and routes from MAILROUTER = {'MAILERS': {'smtp': {'BACKEND': "
    "'django.core.mail.backends.smtp.EmailBackend', 'OPTIONS': {'host': ...}}}, "
    "'OPTIONS': {'routes': [{'mailers': ['smtp']}]}}"
    + (" (on Django 6.1 and later, or configure the router in MAILERS)" if HAS_MAILERS else "")
)


def legacy_settings() -> Mapping[str, Any]:
    value = getattr(settings, "MAILROUTER", None) or {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(["MAILROUTER must be a dict with 'MAILERS' and 'OPTIONS'"])
    unknown = [key for key in value if key not in LEGACY_KEYS]
    if unknown:
        # A misspelt "MAILERS" would otherwise surface as every alias missing.
        raise ConfigurationError(
            [
                f"MAILROUTER has unknown key {key!r} (expected: {', '.join(LEGACY_KEYS)})"
                for key in unknown
            ]
        )
    return value


def router_options(table: MailerTable) -> Iterator[tuple[str | None, Any]]:
    """Every router configuration in settings, as (alias or None for the legacy
    ``EMAIL_BACKEND`` router, its OPTIONS as given: not validated)."""
    for alias, spec in table.entries.items():
        if is_router_spec(spec):
            yield alias, spec.options
    if not legacy_router_in_use():
        return
    if settings.EMAIL_BACKEND == OUTBOX_BACKEND:
        # The outbox's workers send through MAILROUTER['OPTIONS']'s router
        # unless MAILROUTER['OUTBOX'] names another.
        outbox = legacy_settings().get("OUTBOX") or {}
        if isinstance(outbox, Mapping) and outbox.get("mailer"):
            return
    yield None, legacy_settings().get("OPTIONS", {})


def legacy_router_in_use() -> bool:
    """Whether ``EMAIL_BACKEND`` is the router, or the outbox in front of it
    (the Django 5.2/6.0 style, configured by ``MAILROUTER``)."""
    if uses_mailers_setting() or not is_overridden("EMAIL_BACKEND"):
        return False
    backend = settings.EMAIL_BACKEND
    if backend == OUTBOX_BACKEND:
        return True
    try:
        return is_router_class(import_string(backend))
    except ImportError:
        return False


def router_label(alias: str | None, table: MailerTable) -> str:
    if alias is None:
        return "MAILROUTER['OPTIONS']"
    return table.label(alias)


def backend_class(spec: MailerSpec) -> type | None:
    return backend_import(spec)[0]


def backend_import(spec: MailerSpec) -> tuple[type | None, str | None]:
    """(the BACKEND class, None), or (None, why it cannot be used)."""
    try:
        cls = import_string(spec.backend)
    except ImportError as error:
        return None, f"{type(error).__name__}: {error}"
    if not isinstance(cls, type):
        return None, f"it is a {type(cls).__name__}, not a backend class"
    return cls, None


def did_you_mean(key: Any, known: tuple[str, ...]) -> str | None:
    """The known key a misspelt ``key`` most likely meant, if any."""
    if not isinstance(key, str):
        return None
    matches = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return matches[0] if matches else None


def _suggestion(guess: str | None) -> str:
    return f" (did you mean {guess!r}?)" if guess else ""


def is_router_class(cls: object) -> bool:
    """Whether ``cls`` is a router backend class (see ``ROUTER_MARKER``)."""
    return isinstance(cls, type) and getattr(cls, ROUTER_MARKER, False) is True


def is_router_spec(spec: MailerSpec) -> bool:
    return is_router_class(backend_class(spec))


def parse_router_options(
    options: Mapping[str, Any], *, alias: str | None, table: MailerTable
) -> RouterConfig:
    """Validate router OPTIONS; raise ConfigurationError listing every problem."""
    label = router_label(alias, table)
    problems: list[str] = []
    unknown = [key for key in options if key not in ROUTER_OPTION_KEYS]
    guesses = {key: did_you_mean(key, ROUTER_OPTION_KEYS) for key in unknown}
    if unknown:
        names = ", ".join(f"{key!r}{_suggestion(guesses[key])}" for key in unknown)
        problems.append(
            f"{label}: Unknown options {names} "
            f"(router options are: {', '.join(ROUTER_OPTION_KEYS)})."
        )
    routes: list[Route] = []
    # A misspelt 'routes' is one mistake: reported as the unknown key only.
    if "routes" in options or "routes" not in guesses.values():
        routes = _parse_routes(options.get("routes"), label, table, problems)
    delivery = _parse_delivery(
        options.get("delivery", Delivery.AT_MOST_ONCE.value), label, problems
    )
    classifier = _parse_classifier(options.get("classifier"), label, problems)
    timeout = _parse_seconds(
        options.get("timeout", DEFAULT_TIMEOUT), f"{label}: 'timeout'", problems
    )
    timeouts = _parse_timeouts(options.get("timeouts", {}), label, table, problems)
    health = parse_health(
        options.get("health", {}), label, table, table.source, problems, routers=table.routers
    )
    status_pages = parse_status_pages(
        options.get("status_pages"), label,
        lambda name: name in table and name not in table.routers, table.source, problems,
    )
    if status_pages and not health.enabled:
        problems.append(
            f"{label}: 'status_pages' needs health tracking (page state lives in the health "
            "cache); remove 'health': False"
        )
    webhook_token = parse_webhook_token(options.get("status_webhook_token"), label, problems)
    concurrency = _parse_concurrency(options.get("concurrency", 1), label, problems)
    rate_limits = parse_rate_limits(options.get("rate_limits", {}), label, table, problems)
    for limited in rate_limits:
        if limited in table.routers:
            problems.append(
                f"{label}: 'rate_limits' names {limited!r}, which is a router; "
                "limit the mailers it routes to"
            )
    rate_limits_cache = (
        parse_cache_alias(options["rate_limits_cache"], f"{label}: 'rate_limits_cache'", problems)
        if options.get("rate_limits_cache") is not None
        else health.cache
    )
    max_wait = _parse_seconds(
        options.get("max_wait", DEFAULT_MAX_WAIT), f"{label}: 'max_wait'", problems, zero=True
    )
    if not problems:
        problems.extend(find_cycles(alias, routes, table))
    if problems:
        raise ConfigurationError(problems)
    return RouterConfig(
        label=label,
        alias=alias,
        routes=tuple(routes),
        delivery=delivery,
        classifier=classifier,
        timeout=timeout,
        timeouts=timeouts,
        health_settings=health,
        status_pages=status_pages,
        status_webhook_token=webhook_token,
        concurrency=concurrency,
        rate_limits=rate_limits,
        rate_limits_cache=rate_limits_cache,
        max_wait=DEFAULT_MAX_WAIT if max_wait is None else max_wait,
    )


def _parse_routes(raw: Any, label: str, table: MailerTable, problems: list[str]) -> list[Route]:
    if raw is None:
        problems.append(f"{label}: 'routes' is required (a list of routes)")
        return []
    if not isinstance(raw, (list, tuple)) or not raw:
        problems.append(f"{label}: 'routes' must be a non-empty list of routes")
        return []
    routes: list[Route] = []
    seen_names: set[str] = set()
    invalid_when: set[int] = set()
    positions: list[int] = []
    for index, entry in enumerate(raw):
        where = f"{label}: routes[{index}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where} must be a dict with 'mailers' (and optional 'name', 'when')")
            continue
        name = entry.get("name", f"#{index}")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: 'name' must be a non-empty string")
            name = f"#{index}"
        where = f"{where} (route {name!r})"
        if name in seen_names:
            problems.append(f"{where}: duplicate route name {name!r}")
        seen_names.add(name)
        guesses = set()
        for key in entry:
            if key not in ROUTE_KEYS:
                guess = did_you_mean(key, ROUTE_KEYS)
                guesses.add(guess)
                problems.append(
                    f"{where}: unknown route key {key!r}{_suggestion(guess)} "
                    f"(expected: {', '.join(ROUTE_KEYS)})"
                )
        when = None
        if "when" in entry:
            try:
                when = compile_when(entry["when"])
            except MatcherError as error:
                problems.append(f"{where}: {error}")
                # Reported once, as what it is: not also as a catch-all route.
                invalid_when.add(index)
        mailers = parse_alias_list(entry.get("mailers"))
        if mailers is None and "mailers" not in entry and "mailers" in guesses:
            continue  # a misspelt 'mailers': reported once, as the unknown key
        if mailers is None:
            problems.append(
                f"{where}: 'mailers' must be a non-empty list of mailer aliases, "
                f"not {entry.get('mailers')!r}"
            )
            continue
        for alias in mailers:
            if alias not in table:
                problems.append(
                    f"{where}: 'mailers' names {alias!r}, which is not in {table.source}"
                )
            elif alias in table.outboxes:
                problems.append(f"{where}: 'mailers' names {alias!r}, {OUTBOX_CANDIDATE}")
        if len(set(mailers)) != len(mailers):
            problems.append(f"{where}: 'mailers' lists an alias twice: {list(mailers)!r}")
        strategy = parse_strategy(entry, mailers, where, problems)
        routes.append(Route(name, when, mailers, strategy))
        positions.append(index)
    for route, index in zip(routes[:-1], positions, strict=False):
        if route.when is None and index not in invalid_when:
            problems.append(
                f"{label}: route {route.name!r} has no 'when' and matches everything, "
                "so the routes after it can never match; put the catch-all route last"
            )
    return routes


#: Why an outbox cannot be a router's candidate (a route's or a pin's).
OUTBOX_CANDIDATE = (
    "which is an outbox (mailrouter.outbox.OutboxBackend): each delivery would store the "
    "message again instead of sending it; name the mailers (or the router) the outbox "
    "delivers through"
)


def parse_alias_list(value: Any) -> tuple[str, ...] | None:
    """A mailer list as given in a route or ``message.mailers`` (a list or one alias)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        return None
    if not all(isinstance(alias, str) and alias for alias in value):
        return None
    return tuple(value)


def _parse_delivery(value: Any, label: str, problems: list[str]) -> Delivery:
    try:
        return Delivery(value)
    except ValueError:
        choices = ", ".join(repr(d.value) for d in Delivery)
        problems.append(f"{label}: 'delivery' must be one of {choices}, not {value!r}")
        return Delivery.AT_MOST_ONCE


def _parse_classifier(value: Any, label: str, problems: list[str]) -> Classifier:
    if value is None:
        return default_classifier
    if callable(value):
        return value  # type: ignore[no-any-return]
    if not isinstance(value, str):
        problems.append(f"{label}: 'classifier' must be a dotted path or a callable")
        return default_classifier
    try:
        function = import_string(value)
    except ImportError as error:
        problems.append(f"{label}: 'classifier' {value!r} cannot be imported: {error}")
        return default_classifier
    if not callable(function):
        problems.append(f"{label}: 'classifier' {value!r} is not callable")
        return default_classifier
    return function  # type: ignore[no-any-return]


def _parse_seconds(
    value: Any, where: str, problems: list[str], *, zero: bool = False
) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value < 0
        or (value == 0 and not zero)
    ):
        kind = "a number of seconds ≥ 0" if zero else "a positive number of seconds or None"
        problems.append(f"{where} must be {kind}, not {value!r}")
        return None
    return float(value)


def _parse_concurrency(value: Any, label: str, problems: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        problems.append(
            f"{label}: 'concurrency' must be an integer from 1 to 256 (worker threads "
            f"per batch), not {value!r}"
        )
        return 1
    return value


def _parse_timeouts(
    value: Any, label: str, table: MailerTable, problems: list[str]
) -> dict[str, float]:
    if not isinstance(value, Mapping):
        problems.append(f"{label}: 'timeouts' must be a dict of mailer alias → seconds")
        return {}
    timeouts: dict[str, float] = {}
    for alias, seconds in value.items():
        if alias not in table:
            problems.append(f"{label}: 'timeouts' names {alias!r}, which is not in {table.source}")
            continue
        if alias in table.routers:
            # A router sends nothing itself: its mailers' timeouts apply.
            problems.append(
                f"{label}: 'timeouts' names {alias!r}, which is a router "
                "(set the timeouts of the mailers it routes to)"
            )
            continue
        parsed = _parse_seconds(seconds, f"{label}: 'timeouts'[{alias!r}]", problems)
        if parsed is not None:
            timeouts[alias] = parsed
    return timeouts


def find_cycles(
    alias: str | None, routes: list[Route] | tuple[Route, ...], table: MailerTable
) -> list[str]:
    """Report routes that lead back to a router already on the path.

    A router may route to another router (nesting), but never, through any
    chain of routers, back to itself.
    """
    root = alias if alias is not None else "MAILROUTER"
    problems: list[str] = []

    def children(spec: MailerSpec) -> list[str]:
        raw_routes = spec.options.get("routes") or []
        found: list[str] = []
        for route in raw_routes if isinstance(raw_routes, (list, tuple)) else []:
            if isinstance(route, Mapping):
                found.extend(parse_alias_list(route.get("mailers")) or ())
        return found

    def visit(target: str, path: list[str]) -> None:
        if target in path:
            chain = " → ".join([*path, target])
            problems.append(f"{router_label(alias, table)}: route cycle {chain}")
            return
        if target not in table or not is_router_spec(table[target]):
            return
        for child in children(table[target]):
            visit(child, [*path, target])

    for route in routes:
        for target in route.mailers:
            visit(target, [root])
    return sorted(set(problems))
