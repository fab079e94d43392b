"""Circuit-breaker policy: pure decisions over immutable values.

A :class:`BreakerPolicy` is configuration (thresholds, cooldowns); a
:class:`Breaker` is the stored state of one mailer's breaker. Like urllib3's
``Retry``, the policy's methods never mutate anything: they take the current
``Breaker`` and the time, and return the next ``Breaker``. Nothing here does
I/O or reads a clock, so every transition can be tested with plain numbers.

States::

    closed --(threshold consecutive failures, or failure rate over the window)--> open
    open   --(cooldown elapsed; implicit, computed from ``retry_at``)----------> half_open
    half_open --(the one probe attempt succeeds)--> closed
    half_open --(the probe fails; cooldown doubles, capped)--> open

Only ``closed`` and ``open`` are ever stored: ``half_open`` is ``open`` whose
``retry_at`` has passed. That way no process has to be awake at the end of a
cooldown to flip a state, and every process agrees on it from the same record.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any


class State(enum.StrEnum):
    """A breaker's state as the router acts on it."""

    #: Healthy: the mailer is tried normally.
    CLOSED = "closed"
    #: Failing: the mailer is skipped until ``retry_at``.
    OPEN = "open"
    #: Cooldown over: one process (holding the probe lease) may try it once.
    HALF_OPEN = "half_open"


#: The sliding window is kept as this many fixed buckets; the oldest bucket
#: drops out whole, so the window really covers between 5/6 and 6/6 of
#: ``window`` seconds. Six buckets keep the error small and the reads cheap.
WINDOW_BUCKETS = 6

#: Window buckets pack two counters into one integer, so one atomic ``incr``
#: updates both: ``attempts + failures * FAILURE_UNIT``.
FAILURE_UNIT = 1 << 32


def pack(failures: int, attempts: int) -> int:
    return attempts + failures * FAILURE_UNIT


def unpack(value: int) -> tuple[int, int]:
    """(failures, attempts) from a packed window bucket."""
    return value // FAILURE_UNIT, value % FAILURE_UNIT


@dataclass(frozen=True, slots=True)
class Breaker:
    """The shared, stored state of one mailer's breaker.

    ``generation`` grows by one on every stored transition; a process that
    wants to make a transition claims ``generation + 1`` first, so each
    transition happens (and is announced) once across the fleet.
    ``openings`` counts openings since the breaker was last closed; it makes
    the cooldown grow. Times are seconds since the epoch (wall clock: the
    record is compared across processes and machines).
    """

    state: State = State.CLOSED
    generation: int = 0
    openings: int = 0
    since: float | None = None
    retry_at: float | None = None
    reason: str | None = None

    def effective(self, now: float) -> State:
        """The state at ``now``: an open breaker whose cooldown ended is half-open."""
        if self.state is State.OPEN:
            if self.retry_at is not None and now >= self.retry_at:
                return State.HALF_OPEN
            return State.OPEN
        return State.CLOSED

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the cache.

        Plain dicts rather than pickled instances: during a rolling deploy,
        processes running different versions of this package read the same
        records, and a renamed class must not make a record unreadable.
        """
        return {
            "state": self.state.value,
            "generation": self.generation,
            "openings": self.openings,
            "since": self.since,
            "retry_at": self.retry_at,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Breaker:
        """Parse a stored record; anything unreadable counts as a fresh, closed breaker."""
        if not isinstance(data, Mapping):
            return cls()
        try:
            return cls(
                state=State(data.get("state", "closed")),
                generation=int(data.get("generation", 0)),
                openings=int(data.get("openings", 0)),
                since=_optional_float(data.get("since")),
                retry_at=_optional_float(data.get("retry_at")),
                reason=_optional_str(data.get("reason")),
            )
        except (TypeError, ValueError):
            return cls()


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """Attempts and failures of one mailer over the sliding window."""

    failures: int = 0
    attempts: int = 0

    @property
    def rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open.

    - ``failure_threshold``: consecutive failures (fleet-wide) that open the
      breaker; ``None`` disables this rule.
    - ``failure_rate`` over ``window`` seconds: the breaker also opens when at
      least this fraction of the attempts in the window failed, once the window
      holds ``min_attempts`` attempts; ``None`` disables this rule.
    - ``cooldown``: seconds an opened breaker stays open before one probe;
      each failed probe doubles it, up to ``max_cooldown``.
    """

    failure_threshold: int | None = 5
    window: float = 60.0
    failure_rate: float | None = 0.5
    min_attempts: int = 20
    cooldown: float = 30.0
    max_cooldown: float = 600.0

    # -- decisions ---------------------------------------------------------

    def trip_reason(self, consecutive: int, window: WindowCounts) -> str | None:
        """Why a closed breaker must open now, or None to keep it closed."""
        if self.failure_threshold is not None and consecutive >= self.failure_threshold:
            return f"{consecutive} consecutive failures"
        if (
            self.failure_rate is not None
            and window.attempts >= self.min_attempts
            and window.rate >= self.failure_rate
        ):
            return (
                f"failure rate {window.rate:.0%} ({window.failures}/{window.attempts}) "
                f"over {self.window:g}s"
            )
        return None

    def cooldown_for(self, openings: int) -> float:
        """Cooldown after the ``openings``-th opening in a row (1 = first)."""
        exponent = max(0, openings - 1)
        # Cap the exponent before computing: 2**10000 is an OverflowError as a float.
        if exponent > 64:
            return self.max_cooldown
        return min(self.cooldown * (2.0**exponent), self.max_cooldown)

    # -- transitions (each returns the next Breaker) ------------------------

    def open(self, breaker: Breaker, now: float, reason: str) -> Breaker:
        """Open the breaker: from closed (first opening) or after a failed probe."""
        openings = breaker.openings + 1 if breaker.state is State.OPEN else 1
        return Breaker(
            state=State.OPEN,
            generation=breaker.generation + 1,
            openings=openings,
            since=now,
            retry_at=now + self.cooldown_for(openings),
            reason=reason,
        )

    def close(self, breaker: Breaker, now: float, reason: str) -> Breaker:
        """Close the breaker (a probe or any other attempt succeeded)."""
        return replace(
            breaker,
            state=State.CLOSED,
            generation=breaker.generation + 1,
            openings=0,
            since=now,
            retry_at=None,
            reason=reason,
        )

    # -- window geometry -------------------------------------------------------

    @property
    def bucket_width(self) -> float:
        return self.window / WINDOW_BUCKETS

    def bucket(self, now: float) -> int:
        """Index of the window bucket ``now`` falls in (absolute, so all processes agree)."""
        return math.floor(now / self.bucket_width)

    def window_buckets(self, now: float) -> range:
        """The bucket indexes that make up the window ending at ``now``."""
        current = self.bucket(now)
        return range(current - WINDOW_BUCKETS + 1, current + 1)

    def record_ttl(self) -> int:
        """How long a stored breaker record is kept (seconds).

        Long enough to outlive the longest cooldown several times over: losing an
        open record makes the fleet pay the threshold again. A closed record is
        only kept for ``status`` (when and why it last closed).
        """
        return int(max(self.max_cooldown * 4, 86400))
