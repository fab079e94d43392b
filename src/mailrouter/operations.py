"""What operators ask of a configured router, as values: status, explain, drain.

``manage.py mailrouter`` only parses arguments and formats these values;
``RouterBackend.explain()`` and a health endpoint use the same functions.
Nothing here sends mail, opens a mailer's connection or takes a probe lease.

Every function that reads the health cache survives its absence: an
unreachable cache makes the health part *unknown* (with the reason), never
hides the routing part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from django.core.mail import EmailMessage

from .config import MailerTable, RouterConfig, is_router_spec, load_mailer_table, router_options
from .errors import ConfigurationError
from .health.breaker import State
from .health.monitor import explain_skip
from .health.store import Drain, HealthStore, MailerHealth, store_for
from .leafkinds import kind_for
from .leaves import apply_timeout, build_mailer
from .runtime import RouterRuntime, load_runtime
from .strategies import Draw, order

#: ``CandidateExplanation.health`` when the health cache could not be read.
UNKNOWN = "unknown"
#: ``CandidateExplanation.health`` when health tracking is off, or for routers.
UNTRACKED = "untracked"


@dataclass(frozen=True)
class ConfiguredRouter:
    """A router as configured in settings: its alias (None: ``MAILROUTER``)."""

    alias: str | None
    runtime: RouterRuntime

    @property
    def config(self) -> RouterConfig:
        return self.runtime.config

    @property
    def name(self) -> str:
        return self.alias if self.alias is not None else "MAILROUTER"

    @property
    def store(self) -> HealthStore | None:
        settings = self.config.health_settings
        return store_for(settings) if settings.enabled else None


def configured_routers() -> list[ConfiguredRouter]:
    """Every router in settings, validated; raises ConfigurationError."""
    table = load_mailer_table()
    routers = []
    for alias, options in router_options(table):
        if not isinstance(options, Mapping):
            raise ConfigurationError([f"router {alias!r}: OPTIONS must be a dict"])
        routers.append(ConfiguredRouter(alias, load_runtime(alias, options)))
    return routers


def per_process_note(store: HealthStore) -> str | None:
    if store.kind == "local":
        return (
            f"note: health state is kept in {store.label}, which is per process; "
            "this shows only this process's view, not your web workers'"
        )
    return None


def unreachable_reason(store: HealthStore, redact: Callable[[str], str]) -> str | None:
    """Why ``store``'s cache cannot be read now, redacted; None when it can."""
    try:
        store.check_reachable()
    except Exception as error:
        return (
            f"health cache {store.label} is unreachable: "
            f"{type(error).__name__}: {redact(str(error))}"
        )
    return None


# -- explain ----------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateExplanation:
    """One candidate of an explained message, in the order it would be tried.

    ``health``: the breaker state (``closed``, ``open``, ``half_open``),
    ``untracked`` (health off, a nested router, a legacy connection object) or
    ``unknown`` (the health cache could not be read). ``skip``: why it would
    be skipped now, or None if it would be tried.
    """

    alias: str
    health: str
    skip: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Explanation:
    """What a router would do with a message right now (``RouterBackend.explain``).

    ``route``: the route that matched, ``"(pinned)"``, ``"(connection)"`` or
    None. ``problem``: why no mailer can take the message (no route, a bad
    pin, a routing loop), else None. ``health_error``: why health is unknown.
    """

    router: str
    route: str | None
    candidates: tuple[CandidateExplanation, ...] = ()
    problem: str | None = None
    health_error: str | None = None
    notes: tuple[str, ...] = ()
    #: The route's strategy (``failover``, ``weighted (...)``, ``sticky (...)``).
    strategy: str = "failover"
    #: Who the strategy put first for this message, and why (None: failover).
    draw: Draw | None = None

    @property
    def all_skipped(self) -> bool:
        """Every candidate would be skipped: the router then tries them all anyway."""
        return bool(self.candidates) and all(c.skip for c in self.candidates)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``manage.py mailrouter explain --json``)."""
        data = asdict(self)
        data["candidates"] = [asdict(c) for c in self.candidates]
        data["notes"] = list(self.notes)
        data["all_skipped"] = self.all_skipped
        return data


def explain_message(
    message: EmailMessage,
    runtime: RouterRuntime,
    alias: str | None,
    *,
    is_this_router: Callable[[Any], bool] = lambda connection: False,
) -> Explanation:
    """The route and candidates ``message`` would get from this router now."""
    from .routing import select

    name = alias if alias is not None else "MAILROUTER"
    context = runtime.routing_context((alias,), is_this_router=is_this_router)
    selection = select(message, runtime.config, runtime.table, context)
    if selection.problem is not None:
        return Explanation(name, selection.route, problem=runtime.redact(selection.problem))
    ordered, draw = order(
        selection.candidates, [c.alias for c in selection.candidates], selection.strategy, message
    )
    settings = runtime.config.health_settings
    store = store_for(settings) if settings.enabled else None
    tracked = [c.alias for c in selection.candidates if c.tracked]
    health: dict[str, MailerHealth] = {}
    error = None
    notes: list[str] = []
    now = settings.clock()
    if store is not None:
        error = unreachable_reason(store, runtime.redact)
        if error is None:
            health = store.read(tracked, settings.policy, now)
            note = per_process_note(store)
            if note:
                notes.append(note)
    candidates = []
    for candidate in ordered:
        if store is None or not candidate.tracked:
            candidates.append(CandidateExplanation(candidate.alias, UNTRACKED))
            continue
        if error is not None:
            candidates.append(CandidateExplanation(candidate.alias, UNKNOWN))
            continue
        entry = health.get(candidate.alias) or MailerHealth(candidate.alias)
        skip = explain_skip(entry, now, settings.policy(candidate.alias))
        state = entry.breaker.effective(now)
        note = None
        if state is State.HALF_OPEN and skip is None:
            note = "cooldown over: the next attempt is the probe (one process in the fleet)"
        candidates.append(
            CandidateExplanation(
                candidate.alias, state.value,
                runtime.redact(skip) if skip else None, note,
            )
        )
    if store is not None and error is None and runtime.config.status_pages:
        from .status_pages.view import explain_pages

        candidates = explain_pages(
            candidates, runtime.config.status_pages, store, now, runtime.redact
        )
    return Explanation(
        name, selection.route, tuple(candidates), None, error, tuple(notes),
        selection.strategy.describe(), draw,
    )


# -- status -------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReport:
    """One row per mailer (dicts: JSON-ready), notes, and the health cache
    error if one could not be read (the rows then show state ``unknown``)."""

    rows: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"mailers": list(self.rows), "notes": list(self.notes), "error": self.error}


#: Extra columns for ``status`` rows: ``f(router, alias, row) -> None`` adds keys
#: to ``row`` (status pages, rate limits, ... register here).
#: Adds columns to a status row: ``f(router, alias, row)`` updates ``row`` in place.
RowExtender = Callable[[ConfiguredRouter, str, dict[str, Any]], None]


def mailer_status(
    routers: Iterable[ConfiguredRouter],
    redact: Callable[[str], str],
    *,
    extenders: Iterable[RowExtender] = (),
) -> StatusReport:
    """Every mailer the routers route to, once, with its health."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    notes: list[str] = []
    errors: list[str] = []
    extenders = tuple(extenders)
    for router in routers:
        store = router.store
        settings = router.config.health_settings
        now = settings.clock()
        health: dict[str, MailerHealth] = {}
        error = None
        if store is not None:
            error = unreachable_reason(store, redact)
            if error is None:
                health = store.read(list(router.runtime.leaf_aliases), settings.policy, now)
                note = per_process_note(store)
                if note and note not in notes:
                    notes.append(note)
            elif error not in errors:
                errors.append(error)
        for alias in router.runtime.aliases:
            if alias in seen:
                continue
            seen.add(alias)
            row = _status_row(router, store, alias, health.get(alias), now, error, redact)
            for extend in extenders:
                extend(router, alias, row)
            rows.append(row)
    return StatusReport(tuple(rows), tuple(notes), "; ".join(errors) or None)


def effective_timeout(router: ConfiguredRouter, alias: str) -> tuple[float | None, str]:
    """The timeout leaf ``alias`` sends with under this router, and why.

    Precedence: the router's ``timeouts[alias]``; else the leaf's own value
    (its OPTIONS, or its library's default such as Anymail's 30 s); else the
    router's ``timeout``, which only fills leaves that have none.
    """
    config = router.config
    try:
        backend: Any = build_mailer(alias, router.runtime.table)
    except Exception as error:
        return None, f"cannot be built ({type(error).__name__})"
    if alias in config.timeouts:
        apply_timeout(backend, alias, config)
        return config.timeouts[alias], "router timeouts"
    own = getattr(backend, "timeout", None)
    if own is not None:
        return float(own), "mailer's own"
    apply_timeout(backend, alias, config)
    filled = kind_for(backend).timeout(backend)
    if filled is not None and config.timeout is not None:
        return float(filled), "router timeout"
    return None, "none"


def _status_row(
    router: ConfiguredRouter,
    store: HealthStore | None,
    alias: str,
    health: MailerHealth | None,
    now: float,
    error: str | None,
    redact: Callable[[str], str],
) -> dict[str, Any]:
    spec = router.runtime.table[alias]
    is_router = alias in router.runtime.routers
    row: dict[str, Any] = {
        "alias": alias,
        "backend": spec.backend,
        "router": router.name,
        "state": UNTRACKED if store is None or is_router else "closed",
    }
    if not is_router:
        row["timeout"], row["timeout_source"] = effective_timeout(router, alias)
    if store is None or is_router:
        return row
    if error is not None:
        row["state"] = UNKNOWN
        return row
    health = health or MailerHealth(alias)
    policy = router.config.health_settings.policy(alias)
    breaker = health.breaker
    state = breaker.effective(now)
    window = health.window(policy, now)
    drained = health.drained(now)
    row.update(
        state=state.value,
        since=breaker.since,
        reason=redact(breaker.reason) if breaker.reason else None,
        retry_at=breaker.retry_at if state is not State.CLOSED else None,
        openings=breaker.openings,
        consecutive_failures=health.consecutive,
        window_failures=window.failures,
        window_attempts=window.attempts,
        window_seconds=policy.window,
        last_error=redact(health.last_error.text) if health.last_error else None,
        last_error_outcome=health.last_error.outcome if health.last_error else None,
        last_error_at=health.last_error.at if health.last_error else None,
        drained=drained,
        drained_until=health.drain.until if health.drain and drained else None,
        drain_reason=health.drain.reason if health.drain and drained else None,
        cache=store.label,
    )
    if state is State.HALF_OPEN:
        row["probing"] = store.probe_holder(alias, breaker.generation)
    return row


# -- drain ---------------------------------------------------------------------------


class OperationRefused(Exception):
    """An operation cannot be done as asked; ``kind`` says why:
    ``"usage"`` (bad alias, health off) or ``"unreachable"`` (the state is not
    shared or cannot be reached)."""

    def __init__(self, text: str, kind: str) -> None:
        super().__init__(text)
        self.kind = kind


@dataclass(frozen=True)
class DrainResult:
    """What ``drain_mailer``/``undrain_mailer`` did: the drain stored (None for
    undrain) and the health cache aliases it was stored in."""

    alias: str
    drain: Drain | None
    #: For undrain: whether the mailer was drained.
    was_drained: bool = False
    stores: tuple[str, ...] = field(default_factory=tuple)


def check_drainable(alias: str, table: MailerTable) -> None:
    """Only mailers can be drained: a router has no health of its own."""
    if alias not in table:
        known = ", ".join(sorted(table.entries)) or "(none)"
        raise OperationRefused(
            f"unknown mailer alias {alias!r}; {table.source} defines: {known}", "usage"
        )
    if is_router_spec(table[alias]):
        raise OperationRefused(
            f"{alias!r} is a router; drain or undrain the mailers it routes to", "usage"
        )


def shared_stores(
    routers: Iterable[ConfiguredRouter], verb: str, redact: Callable[[str], str]
) -> list[HealthStore]:
    """The fleet-wide health stores of ``routers``; refuses per-process ones."""
    stores: dict[int, HealthStore] = {}
    for router in routers:
        store = router.store
        if store is not None:
            stores[id(store)] = store
    if not stores:
        raise OperationRefused(
            f"cannot {verb}: health tracking is switched off for every router", "usage"
        )
    for store in stores.values():
        if store.kind == "local":
            raise OperationRefused(
                f"cannot {verb}: health state is in {store.label}, which is per process, "
                "so this would only affect this process. Set the router option "
                "health['cache'] to a shared cache (Redis).",
                "unreachable",
            )
        error = unreachable_reason(store, redact)
        if error is not None:
            raise OperationRefused(error, "unreachable")
    return list(stores.values())


def drain_mailer(
    alias: str,
    routers: list[ConfiguredRouter],
    redact: Callable[[str], str],
    *,
    seconds: float | None,
    reason: str = "",
) -> DrainResult:
    """Take ``alias`` out of rotation for the whole fleet (for ``seconds``, or
    until undrained)."""
    check_drainable(alias, routers[0].runtime.table)
    stores = shared_stores(routers, "drain", redact)
    # The routers' clock (wall time unless a test injects one), so that the
    # drain ends when the routers think it does.
    now = routers[0].config.health_settings.clock()
    drain = Drain(now, None if seconds is None else now + seconds, reason)
    for store in stores:
        store.set_drain(alias, drain)
    return DrainResult(alias, drain, stores=tuple(s.label for s in stores))


def undrain_mailer(
    alias: str, routers: list[ConfiguredRouter], redact: Callable[[str], str]
) -> DrainResult:
    check_drainable(alias, routers[0].runtime.table)
    was = False
    stores = shared_stores(routers, "undrain", redact)
    for store in stores:
        was = store.clear_drain(alias) or was
    return DrainResult(alias, None, was, tuple(s.label for s in stores))
