"""``HealthMonitor``: the failover loop's view of mailer health.

Implements the ``HealthView`` protocol of ``mailrouter.delivery``:

- ``begin_batch`` reads every alias's state in ONE cache round trip;
- ``skip_reason`` answers from that snapshot (no I/O), except for a
  half-open breaker, where it takes the fleet-wide probe lease (one
  ``cache.add``, only at the end of a cooldown);
- ``record`` writes only failures and state changes; successes are counted
  in memory and written at ``end_batch`` only while failures are on record
  (to end a failure streak, or to feed the failure-rate window).

So a healthy fleet costs one ``get_many`` per ``send_messages()`` and no
writes; a mailer whose breaker is open costs nothing more.

Plug-in health sources (``mailrouter.health.sources``; ESP status pages are
one) are read in the same ``get_many``: a source may skip a mailer like an
open breaker, or move it behind the healthy candidates (``order``).

One monitor belongs to one router instance and is used under the router's
lock, so it is not itself thread-safe; the store it uses is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..config import RouterConfig
from ..outcomes import Attempt, Outcome
from ..shared_state.holder import holder_id
from .breaker import Breaker, BreakerPolicy, State, WindowCounts, unpack
from .settings import HealthSettings
from .sources import HealthSource, Slot, sources_for
from .store import HealthStore, LastError, MailerHealth, store_for

if TYPE_CHECKING:
    from ..routing import Candidate

logger = logging.getLogger("mailrouter")

#: Fallback attempt duration (seconds) used to size the probe lease when the
#: router has no timeout for the mailer.
DEFAULT_PROBE_SECONDS = 60.0


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class _AliasBatch:
    """What this batch knows and did for one alias."""

    health: MailerHealth
    successes: int = 0
    failures: int = 0
    #: Whether the last health-relevant attempt of this batch succeeded.
    healed: bool = False
    #: Probe lease: None = not tried, True = held by this batch, False = lost.
    probe: bool | None = None
    probe_generation: int = 0
    probe_done: bool = False
    #: Window bucket values written during this batch (bucket → packed).
    fresh_buckets: dict[int, int] = field(default_factory=dict)


StateListener = Callable[[str, State, State, str], None]


class HealthMonitor:
    """Shared circuit breakers for the mailers of one router."""

    def __init__(
        self,
        settings: HealthSettings,
        *,
        store: HealthStore | None = None,
        attempt_timeout: Callable[[str], float | None] = lambda alias: None,
        on_state_changed: StateListener | None = None,
        sources: tuple[HealthSource, ...] = (),
    ) -> None:
        self.settings = settings
        self.store = store or store_for(settings)
        self._attempt_timeout = attempt_timeout
        self._on_state_changed = on_state_changed
        self._batch: dict[str, _AliasBatch] = {}
        self._sources = sources
        #: Every source's records: what ``begin_batch`` reads with the breakers.
        self._slots: tuple[Slot, ...] = (
            sources[0].slots if len(sources) == 1
            else tuple(slot for source in sources for slot in source.slots)
        )
        #: This batch's verdicts of the sources: alias → reason.
        self._source_skips: Mapping[str, str] = {}
        self._source_demotes: Mapping[str, str] = {}

    # -- HealthView -------------------------------------------------------------

    def begin_batch(self, aliases: Collection[str]) -> None:
        now = self.settings.clock()
        if not self._sources:
            snapshot = self.store.read(aliases, self.settings.policy, now)
        else:
            found: dict[Slot, Any] = {}
            snapshot = self.store.read(
                aliases, self.settings.policy, now, slots=self._slots, slots_found=found
            )
            self._source_skips, self._source_demotes = self._source_effects(found, now)
        self._batch = {alias: _AliasBatch(health) for alias, health in snapshot.items()}

    def order(self, candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
        """Candidates a health source demotes (a status page saying degraded)
        go after the others."""
        demoted = self._source_demotes
        if not demoted or len(candidates) < 2:
            return candidates
        return tuple(
            sorted(candidates, key=lambda c: c.connection is None and c.alias in demoted)
        )

    def skip_reason(self, alias: str) -> str | None:
        entry = self._entry(alias)
        now = self.settings.clock()
        reason = explain_skip(entry.health, now, self._policy(alias))
        if reason is None and self._source_skips:
            # Before the half-open probe lease: a mailer its page calls down is not probed.
            reason = self._source_skips.get(alias)
        if reason is not None or entry.health.breaker.effective(now) is State.CLOSED:
            return reason
        # Half-open: exactly one process in the fleet may make the probe.
        if entry.probe is None:
            self._try_probe_lease(alias, entry)
        if entry.probe:
            return None
        return "circuit half-open: another process is probing it"

    def record(self, alias: str, attempt: Attempt) -> None:
        outcome = attempt.outcome
        if outcome is Outcome.ACCEPTED:
            self._success(alias)
        elif outcome.counts_against_health:
            self._failure(alias, attempt)
        # rejected / incompatible say nothing about the mailer's health.

    def end_batch(self) -> None:
        try:
            now = self.settings.clock()
            for alias, entry in self._batch.items():
                self._flush(alias, entry, now)
        finally:
            self._batch = {}

    # -- details -----------------------------------------------------------------

    def _source_effects(
        self, found: Mapping[Slot, Any], now: float
    ) -> tuple[Mapping[str, str], Mapping[str, str]]:
        """(skip, demote) of all sources; the first source's reason wins."""
        clock = self.settings.clock
        if len(self._sources) == 1:
            return self._sources[0].effects(found, now, self.store, clock)
        skip: dict[str, str] = {}
        demote: dict[str, str] = {}
        for source in self._sources:
            source_skip, source_demote = source.effects(found, now, self.store, clock)
            for alias, why in source_skip.items():
                skip.setdefault(alias, why)
            for alias, why in source_demote.items():
                demote.setdefault(alias, why)
        return skip, demote

    def _entry(self, alias: str) -> _AliasBatch:
        entry = self._batch.get(alias)
        if entry is None:
            # An alias outside the router's routes (a pinned message.mailers):
            # read it on first use, one extra round trip for such batches only.
            now = self.settings.clock()
            health = self.store.read([alias], self.settings.policy, now).get(alias)
            entry = self._batch[alias] = _AliasBatch(health or MailerHealth(alias))
        return entry

    def _policy(self, alias: str) -> BreakerPolicy:
        return self.settings.policy(alias)

    def _lease_ttl(self, alias: str, breaker: Breaker) -> int:
        """Long enough for one attempt to finish, so a slow probe is not joined
        by a second one; short enough that a crashed prober is replaced soon."""
        attempt = self._attempt_timeout(alias) or DEFAULT_PROBE_SECONDS
        cooldown = self._policy(alias).cooldown_for(max(1, breaker.openings))
        return max(1, math.ceil(max(cooldown, attempt * 2)))

    def _try_probe_lease(self, alias: str, entry: _AliasBatch) -> None:
        breaker = entry.health.breaker
        won = self.store.acquire_probe(
            alias, breaker.generation, holder_id(), self._lease_ttl(alias, breaker)
        )
        entry.probe = won
        entry.probe_generation = breaker.generation
        if won:
            self._announce(
                alias, State.OPEN, State.HALF_OPEN,
                f"cooldown over after opening #{breaker.openings}; this process probes",
            )

    def _success(self, alias: str) -> None:
        entry = self._entry(alias)
        entry.successes += 1
        entry.healed = True
        now = self.settings.clock()
        breaker = entry.health.breaker
        if breaker.state is State.CLOSED:
            return
        reason = "probe succeeded" if entry.probe else "an attempt succeeded"
        entry.probe_done = True
        self._transition(alias, entry, self._policy(alias).close(breaker, now, reason), now)

    def _failure(self, alias: str, attempt: Attempt) -> None:
        entry = self._entry(alias)
        policy = self._policy(alias)
        now = self.settings.clock()
        if entry.healed and entry.health.consecutive:
            # A success earlier in this batch ended the streak this failure starts.
            self.store.reset_failures(alias)
        entry.healed = False
        entry.failures += 1
        text = attempt.error or attempt.error_type or attempt.outcome.value
        error = LastError(now, attempt.outcome.value, text)
        consecutive, bucket_value = self.store.record_failure(alias, policy, now, error)
        window = self._window_after(entry, policy, now, bucket_value)
        entry.health = replace(entry.health, consecutive=consecutive, last_error=error)
        breaker = entry.health.breaker
        state = breaker.effective(now)
        if state is State.HALF_OPEN and entry.probe:
            entry.probe_done = True
            reason = f"probe failed: {text}"
            self._transition(alias, entry, policy.open(breaker, now, reason), now)
        elif state is State.CLOSED:
            trip = policy.trip_reason(consecutive, window)
            if trip is not None:
                reason = f"{trip} (last: {text})"
                self._transition(alias, entry, policy.open(breaker, now, reason), now)

    def _window_after(
        self, entry: _AliasBatch, policy: BreakerPolicy, now: float, bucket_value: int | None
    ) -> WindowCounts:
        """The window counts including the bucket value just returned by incr
        (fresher than the snapshot) and the snapshot's other buckets."""
        if bucket_value is None:
            return WindowCounts()
        current = policy.bucket(now)
        entry.fresh_buckets[current] = bucket_value
        failures = attempts = 0
        for bucket in policy.window_buckets(now):
            value = entry.fresh_buckets.get(bucket, entry.health.buckets.get(bucket, 0))
            f, a = unpack(value)
            failures += f
            attempts += a
        return WindowCounts(failures, attempts)

    def _transition(self, alias: str, entry: _AliasBatch, new: Breaker, now: float) -> None:
        """Store ``new`` as the breaker's next state, once across the fleet."""
        old = entry.health.breaker
        old_state = old.effective(now) if not entry.probe else State.HALF_OPEN
        entry.health = replace(entry.health, breaker=new)
        if not self.store.claim(alias, new.generation, holder_id()):
            # Another process makes this transition; act on it locally already.
            return
        current = self.store.load_breaker(alias)
        if current.generation != old.generation:
            # Our snapshot was stale: someone else moved the breaker meanwhile.
            entry.health = replace(entry.health, breaker=current)
            return
        policy = self._policy(alias)
        self.store.save_breaker(alias, new, policy.record_ttl())
        if new.state is State.CLOSED:
            self.store.clear_counters(alias, policy, now)
            entry.health = replace(entry.health, consecutive=0, buckets={})
            entry.fresh_buckets.clear()
        self._announce(alias, old_state, new.state, new.reason or "")

    def _announce(self, alias: str, old: State, new: State, reason: str) -> None:
        level = logging.WARNING if new is State.OPEN else logging.INFO
        logger.log(
            level,
            "mailer %s circuit %s → %s: %s",
            alias, old.value, new.value, reason,
            extra={"mailrouter_alias": alias, "mailrouter_state": new.value},
        )
        if self._on_state_changed is not None:
            self._on_state_changed(alias, old, new, reason)

    def _flush(self, alias: str, entry: _AliasBatch, now: float) -> None:
        """End of batch: write successes only if failures are on record."""
        policy = self._policy(alias)
        if entry.successes and (entry.failures or entry.health.troubled(policy, now)):
            reset = entry.healed and (entry.health.consecutive > 0)
            self.store.record_successes(alias, policy, now, entry.successes, reset=reset)
        if entry.probe and not entry.probe_done:
            # We held the lease but never reached this mailer (an earlier
            # candidate took every message): let another process probe now.
            self.store.release_probe(alias, entry.probe_generation)


def explain_skip(health: MailerHealth, now: float, policy: BreakerPolicy) -> str | None:
    """Why a mailer would be skipped now (read-only: takes no lease)."""
    if health.drained(now):
        assert health.drain is not None
        until = f" until {format_time(health.drain.until)}" if health.drain.until else ""
        why = f": {health.drain.reason}" if health.drain.reason else ""
        return f"drained{until}{why}"
    state = health.breaker.effective(now)
    if state is State.OPEN:
        return (
            f"circuit open until {format_time(health.breaker.retry_at)} "
            f"({health.breaker.reason or 'failures'})"
        )
    if (
        state is State.CLOSED
        and policy.failure_threshold is not None
        and health.consecutive >= policy.failure_threshold
        and health.last_error is not None
        and now < health.last_error.at + policy.cooldown
    ):
        # The threshold is reached but the open record is not stored yet (the
        # process making the transition is between its incr and its write).
        # Acting on the counter closes that window; bounded by the cooldown in
        # case that process died before writing.
        return f"circuit opening ({health.consecutive} consecutive failures)"
    return None


def build_health(
    config: RouterConfig, *, on_state_changed: StateListener | None = None
) -> HealthMonitor | None:
    """The health view for a router built from ``config`` (None when switched off).
    ``on_state_changed(alias, old, new, reason)`` is called after each breaker
    transition this process makes (the router sends its signal from it)."""
    settings = config.health_settings
    if not settings.enabled:
        return None

    def attempt_timeout(alias: str) -> float | None:
        return config.timeouts.get(alias, config.timeout)

    return HealthMonitor(
        settings,
        attempt_timeout=attempt_timeout,
        on_state_changed=on_state_changed,
        sources=sources_for(config),
    )
