"""Choose the candidate mailers for one message. Pure: no I/O, no health.

Precedence: a legacy per-message ``connection`` (other than the router
itself) wins, then a per-message pin ``message.mailers``, then the first route
whose ``when`` matches.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.core.mail import EmailMessage

from .config import MailerTable, RouterConfig, parse_alias_list
from .strategies import FAILOVER, Strategy

PINNED = "(pinned)"
CONNECTION = "(connection)"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A mailer to try: an alias, or the legacy connection object itself."""

    alias: str
    connection: Any = None


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome of routing: candidates in order, or why there are none."""

    route: str | None
    candidates: tuple[Candidate, ...] = ()
    problem: str | None = None
    #: The matched route's strategy (``mailrouter.strategies`` orders the candidates).
    strategy: Strategy = FAILOVER


@lru_cache(maxsize=256)
def route_candidates(aliases: tuple[str, ...]) -> tuple[Candidate, ...]:
    """A route's candidates, built once: they are immutable, so shared."""
    return tuple(Candidate(alias) for alias in aliases)


def legacy_connection(message: EmailMessage) -> Any:
    """The message's ``connection`` without triggering Django 6.1's deprecation warning."""
    state = message.__dict__
    if "_connection" in state:
        return state["_connection"]
    return state.get("connection")


def connection_label(connection: Any) -> str:
    alias = getattr(connection, "alias", None)
    if isinstance(alias, str) and alias:
        return alias
    cls = type(connection)
    return f"connection:{cls.__module__}.{cls.__qualname__}"


def select(
    message: EmailMessage, config: RouterConfig, table: MailerTable, router: Any
) -> Selection:
    connection = legacy_connection(message)
    if connection is not None and not _is_same_router(connection, router):
        return Selection(CONNECTION, (Candidate(connection_label(connection), connection),))

    pinned = getattr(message, "mailers", None)
    if pinned is not None:
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
        return Selection(PINNED, tuple(Candidate(alias) for alias in dict.fromkeys(aliases)))

    for route in config.routes:
        try:
            matched = route.when is None or route.when(message)
        except Exception as error:  # a user's callable matcher failing must not lose the message
            return Selection(
                route.name,
                problem=f"route {route.name!r}: matcher raised {type(error).__name__}: {error}",
            )
        if matched:
            return Selection(route.name, route_candidates(route.mailers), strategy=route.strategy)
    names = ", ".join(route.name for route in config.routes)
    return Selection(
        None,
        problem=f"configuration error: no route matches this message (routes: {names}); "
        "add a catch-all route without 'when'",
    )


def _is_same_router(connection: Any, router: Any) -> bool:
    if connection is router:
        return True
    return type(connection) is type(router) and getattr(connection, "alias", None) == getattr(
        router, "alias", None
    )
