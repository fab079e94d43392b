"""Choose the candidate mailers for one message. Pure: no I/O, no health.

Precedence: a legacy per-message ``connection`` (other than the router
itself) wins, then a per-message pin ``message.mailers``, then the first route
whose ``when`` matches. A router nested below another routes by its routes
only: the outer router already honoured the pin or connection.

Selection gets what it needs as values and callbacks (``RoutingContext``),
never the router itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from django.core.mail import EmailMessage

from .compat import legacy_connection
from .config import OUTBOX_CANDIDATE, MailerTable, RouterConfig, parse_alias_list
from .strategies import FAILOVER, Strategy

PINNED = "(pinned)"
CONNECTION = "(connection)"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A mailer to try: an alias, or the legacy connection object itself.

    ``tracked``: whether its attempts count for health. Routers and legacy
    connection objects are not mailers with a health of their own.
    """

    alias: str
    connection: Any = None
    tracked: bool = True


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome of routing: candidates in order, or why there are none."""

    route: str | None
    candidates: tuple[Candidate, ...] = ()
    problem: str | None = None
    #: The matched route's strategy (``mailrouter.strategies`` orders the candidates).
    strategy: Strategy = FAILOVER


@dataclass(frozen=True, slots=True)
class RoutingContext:
    """What route selection needs to know besides the message and config.

    ``routers``: the aliases in the mailer table that are routers.
    ``path``: the routers this message is already being routed by, outermost
    first, ending with the router selecting now (``None`` stands for the
    legacy ``MAILROUTER`` router).
    ``is_this_router``: whether a legacy ``connection`` object is the router
    selecting now.
    ``nested_config``: the configuration of a candidate that is a router
    (an alias or a router object), or None for a leaf.
    ``matcher_failed``: told when a route's matcher raises (the route then
    does not match).
    """

    routers: frozenset[str]
    path: tuple[str | None, ...]
    is_this_router: Callable[[Any], bool]
    nested_config: Callable[[Candidate], RouterConfig | None]
    matcher_failed: Callable[[str, Exception], None]
    #: A route's candidates by its aliases, built once per context.
    built: dict[tuple[str, ...], tuple[Candidate, ...]] = field(
        default_factory=dict, compare=False
    )

    def candidates(self, aliases: tuple[str, ...]) -> tuple[Candidate, ...]:
        built = self.built.get(aliases)
        if built is None:
            built = self.built[aliases] = route_candidates(aliases, self.routers)
        return built

    @property
    def nested(self) -> bool:
        """Called by another router, which already honoured pin and connection."""
        return len(self.path) > 1


def path_label(name: str | None) -> str:
    return "MAILROUTER" if name is None else name


@lru_cache(maxsize=256)
def route_candidates(
    aliases: tuple[str, ...], routers: frozenset[str] = frozenset()
) -> tuple[Candidate, ...]:
    """A route's candidates, built once: they are immutable, so shared."""
    return tuple(Candidate(alias, tracked=alias not in routers) for alias in aliases)


def connection_label(connection: Any) -> str:
    alias = getattr(connection, "alias", None)
    if isinstance(alias, str) and alias:
        return alias
    cls = type(connection)
    return f"connection:{cls.__module__}.{cls.__qualname__}"


def select(message: EmailMessage, config: RouterConfig, table: MailerTable,
           context: RoutingContext) -> Selection:
    """The candidates for ``message``, in order, or the problem that leaves it none.

    A pin or legacy connection is honoured by the first router that sees the
    message; routers nested below it route by their own routes. A candidate
    that leads back into a router already on ``context.path`` fails the
    message at once (checked through nested routers before anything is sent).
    """
    selection = _select(message, config, table, context)
    if selection.problem is None and may_reach_a_router(selection.candidates):
        loop = find_loop(message, selection.candidates, table, context)
        if loop is not None:
            return Selection(selection.route, problem=loop)
    return selection


def _select(
    message: EmailMessage, config: RouterConfig, table: MailerTable, context: RoutingContext
) -> Selection:
    if not context.nested:
        connection = legacy_connection(message)
        if connection is not None and not context.is_this_router(connection):
            return Selection(
                CONNECTION,
                (Candidate(connection_label(connection), connection, tracked=False),),
            )
        pinned = getattr(message, "mailers", None)
        if pinned is not None:
            return _pinned(pinned, table, context)
    return route_message(message, config, context)


def _pinned(pinned: Any, table: MailerTable, context: RoutingContext) -> Selection:
    aliases = parse_alias_list(pinned)
    if aliases is None:
        return Selection(
            PINNED,
            problem="message.mailers must be an alias or a non-empty list of aliases, "
            f"not {pinned!r}",
        )
    unknown = [alias for alias in aliases if alias not in table]
    if unknown:
        return Selection(
            PINNED,
            problem=f"message.mailers names {unknown[0]!r}, which is not in {table.source}",
        )
    outboxes = [alias for alias in aliases if alias in table.outboxes]
    if outboxes:
        # A row pinned to its own outbox would be stored again at every delivery.
        return Selection(
            PINNED, problem=f"message.mailers names {outboxes[0]!r}, {OUTBOX_CANDIDATE}"
        )
    return Selection(
        PINNED,
        tuple(
            Candidate(alias, tracked=alias not in context.routers)
            for alias in dict.fromkeys(aliases)
        ),
    )


def route_message(
    message: EmailMessage, config: RouterConfig, context: RoutingContext
) -> Selection:
    """The first route whose ``when`` matches (pins and connections aside).

    A matcher that raises counts as "no match" for its route (reported
    through ``context.matcher_failed``): one broken rule must not fail the
    messages meant for the routes after it.
    """
    for route in config.routes:
        if route.when is None:
            return Selection(route.name, context.candidates(route.mailers), None, route.strategy)
        try:
            matched = route.when(message)
        except Exception as error:
            context.matcher_failed(route.name, error)
            continue
        if matched:
            return Selection(route.name, context.candidates(route.mailers), None, route.strategy)
    names = ", ".join(route.name for route in config.routes)
    return Selection(
        None,
        problem=f"configuration error: no route matches this message (routes: {names}); "
        "add a catch-all route without 'when'",
    )


def may_reach_a_router(candidates: tuple[Candidate, ...]) -> bool:
    """Whether a candidate may be a router: a nested router, or a legacy
    connection object (which is not health-tracked either)."""
    for candidate in candidates:  # noqa: SIM110 (a plain loop: runs per message)
        if not candidate.tracked:
            return True
    return False


def find_loop(
    message: EmailMessage,
    candidates: tuple[Candidate, ...],
    table: MailerTable,
    context: RoutingContext,
) -> str | None:
    """Why sending ``message`` to ``candidates`` would re-enter a router already
    routing it (following nested routers' own routes), or None.

    Pure and cheap: only candidates that are routers are looked into.
    """
    for candidate in candidates:
        config = context.nested_config(candidate) if not candidate.tracked else None
        if config is None:
            continue
        name = config.alias
        if name in context.path:
            chain = " → ".join(path_label(step) for step in (*context.path, name))
            return (
                f"{path_label(name)!r} is a router already routing this message "
                f"({chain}); pin or route it to mailers, or to another router"
            )
        inner = replace(context, path=(*context.path, name))
        selection = route_message(message, config, inner)
        loop = find_loop(message, selection.candidates, table, inner)
        if loop is not None:
            return loop
    return None
