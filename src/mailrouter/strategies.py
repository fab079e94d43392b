"""Candidate ordering by a route's ``strategy``: who is tried first.

Pure: no I/O and no health. The route's mailers stay the failover order; a
strategy only chooses the *first* candidate, and the others follow in route
order, so an unhealthy or rate-limited first choice fails over exactly as a
``"failover"`` route would.

- ``"failover"`` (default): route order.
- ``"weighted"``: the first candidate is drawn at random, by ``weights``
  (mailers without a weight are never drawn first; they are failover only).
- ``"sticky"``: the first candidate is chosen by rendezvous hashing of the
  recipient address (optionally weighted), so one recipient's mail keeps
  going through one mailer across processes and restarts; adding or removing
  a mailer only moves the recipients that hash to it.

Random draws take a ``random.Random``-like source, so tests can seed it.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from django.core.mail import EmailMessage

STRATEGY_KEYS = ("strategy", "weights")


class RandomSource(Protocol):
    def random(self) -> float: ...


#: The draw source of routers; ``strategies.RANDOM.seed(n)`` makes draws repeatable.
RANDOM = random.Random()


class StrategyKind(enum.StrEnum):
    FAILOVER = "failover"
    WEIGHTED = "weighted"
    STICKY = "sticky"


@dataclass(frozen=True, slots=True)
class Strategy:
    """A route's validated strategy; ``weights`` holds every route mailer."""

    kind: StrategyKind = StrategyKind.FAILOVER
    weights: Mapping[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind is StrategyKind.FAILOVER:
            return "failover"
        shares = ", ".join(f"{alias} {weight:g}" for alias, weight in self.weights.items())
        return f"{self.kind.value} ({shares})"


FAILOVER = Strategy()


@dataclass(frozen=True, slots=True)
class Draw:
    """Which mailer a strategy put first for one message, and why (for ``explain``)."""

    first: str
    reason: str


T = TypeVar("T")


def order(
    items: Sequence[T],
    aliases: Sequence[str],
    strategy: Strategy,
    message: EmailMessage | None,
    source: RandomSource = RANDOM,
) -> tuple[tuple[T, ...], Draw | None]:
    """``items`` (one per alias, in route order) with the strategy's first
    choice moved to the front, and the draw (None for failover)."""
    if strategy.kind is StrategyKind.FAILOVER or len(items) < 2:
        return tuple(items), None
    if strategy.kind is StrategyKind.WEIGHTED:
        index = _weighted_index(aliases, strategy.weights, source.random())
        reason = f"drawn by weight {strategy.weights[aliases[index]]:g} of " \
            f"{sum(strategy.weights.values()):g}"
    else:
        recipient = sticky_key(message)
        index = _rendezvous_index(aliases, strategy.weights, recipient)
        reason = f"sticky: chosen by a hash of the recipient address {recipient!r}"
    first = items[index]
    rest = [item for position, item in enumerate(items) if position != index]
    return (first, *rest), Draw(aliases[index], reason)


def sticky_key(message: EmailMessage | None) -> str:
    """The address a sticky route hashes: the first recipient, case-folded
    (so ``Bob@X.org`` and ``bob@x.org`` stick to the same mailer)."""
    if message is None:
        return ""
    recipients = message.recipients()
    return recipients[0].strip().lower() if recipients else ""


def _weighted_index(aliases: Sequence[str], weights: Mapping[str, float], draw: float) -> int:
    total = sum(weights.get(alias, 0.0) for alias in aliases)
    point = draw * total
    last = 0
    for index, alias in enumerate(aliases):
        weight = weights.get(alias, 0.0)
        if weight <= 0:
            continue
        last = index
        if point < weight:
            return index
        point -= weight
    return last  # float rounding at the very top of the range


def _rendezvous_index(aliases: Sequence[str], weights: Mapping[str, float], key: str) -> int:
    """Weighted rendezvous hashing: each mailer scores ``-w / ln(h)`` with
    ``h`` a uniform hash of (mailer, recipient) in (0, 1); the best score wins.
    A recipient moves only if its mailer leaves or the weights change."""
    best_index, best_score = 0, -math.inf
    for index, alias in enumerate(aliases):
        weight = weights.get(alias, 1.0)
        if weight <= 0:
            continue
        digest = hashlib.blake2b(f"{alias}\0{key}".encode(), digest_size=8).digest()
        uniform = (int.from_bytes(digest, "big") + 0.5) / 2**64
        score = -weight / math.log(uniform)
        if score > best_score:
            best_index, best_score = index, score
    return best_index


def parse_strategy(
    entry: Mapping[str, Any], mailers: Sequence[str], where: str, problems: list[str]
) -> Strategy:
    """Validate a route's ``strategy`` and ``weights`` keys; append problems
    (each naming the route and the key) to ``problems``."""
    raw_kind = entry.get("strategy", StrategyKind.FAILOVER.value)
    try:
        kind = StrategyKind(raw_kind)
    except ValueError:
        choices = ", ".join(repr(k.value) for k in StrategyKind)
        problems.append(f"{where}: 'strategy' must be one of {choices}, not {raw_kind!r}")
        return FAILOVER
    raw_weights = entry.get("weights")
    if raw_weights is None:
        if kind is StrategyKind.WEIGHTED:
            problems.append(
                f"{where}: 'strategy' 'weighted' needs 'weights', a dict of mailer alias → "
                "share, e.g. {'mailgun': 95, 'postmark': 5}"
            )
        if kind is StrategyKind.FAILOVER:
            return FAILOVER
        return Strategy(kind, {alias: 1.0 for alias in mailers})
    if kind is StrategyKind.FAILOVER:
        problems.append(
            f"{where}: 'weights' needs 'strategy': 'weighted' or 'sticky' (this route fails "
            "over in order)"
        )
        return FAILOVER
    if not isinstance(raw_weights, Mapping) or not raw_weights:
        problems.append(f"{where}: 'weights' must be a dict of mailer alias → share")
        return FAILOVER
    weights: dict[str, float] = {}
    for alias, weight in raw_weights.items():
        if alias not in mailers:
            problems.append(
                f"{where}: 'weights' names {alias!r}, which is not in this route's 'mailers'"
            )
            continue
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
            math.isfinite(weight) and weight >= 0
        ):
            problems.append(
                f"{where}: 'weights'[{alias!r}] must be a number ≥ 0, not {weight!r}"
            )
            continue
        weights[alias] = float(weight)
    if weights and not any(weights.values()):
        problems.append(f"{where}: 'weights' must give at least one mailer a share above 0")
    # Every route mailer, in route order; those not listed are failover only.
    return Strategy(kind, {alias: weights.get(alias, 0.0) for alias in mailers})
