"""Where breaker state lives: a Django cache, with a per-process fallback.

Strategy (``breaker``) is separated from storage (this module), as in the
``limits`` package. Per mailer alias the store keeps a few cache keys::

    mailrouter:health:<alias>:breaker      the Breaker record (plain dict)
    mailrouter:health:<alias>:fails        consecutive failures (atomic incr)
    mailrouter:health:<alias>:w<ms>:<n>    window bucket n: attempts + failures << 32
    mailrouter:health:<alias>:error        last error (redacted text, outcome, time)
    mailrouter:health:<alias>:drain        drained for maintenance (until, reason)
    mailrouter:health:<alias>:claim:<g>    who makes transition g (cache.add)
    mailrouter:health:<alias>:probe:<g>    the probe lease of opening g (cache.add)
    mailrouter:health:<alias>:<part>       health sources' records and leases
                                           (``mailrouter.health.sources``; status
                                           pages use ``page-*``)

Everything the hot path needs for all aliases of a router is read with ONE
``get_many``. Counters use ``incr`` so concurrent failures from many
processes are all counted (atomic on Redis and memcached).

If the cache raises (Redis down), every operation runs against a
per-process local-memory cache instead, through
:class:`~mailrouter.shared_state.fallback.CacheFallback`. Sending never
fails because of the cache.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from django.core.cache import BaseCache, caches

from ..shared_state.fallback import CacheFallback
from ..shared_state.registry import on_reset
from .breaker import Breaker, BreakerPolicy, WindowCounts, pack, unpack
from .memory import ProcessMemory
from .settings import HealthSettings

KEY_PREFIX = "mailrouter:health:"
#: Claims only need to outlive the race between processes making the same
#: transition; a stale claim must not block the next transition for long.
CLAIM_TTL = 60
EMBEDDED = "embedded local memory"

#: Marks a health source's record among the keys ``read`` fetches.
_SOURCE = object()

_SAFE_ALIAS = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


@functools.lru_cache(maxsize=1024)
def alias_key(alias: str) -> str:
    """The alias as a cache-key segment: itself when safe for every backend
    (memcached forbids spaces and control characters), else a digest."""
    if _SAFE_ALIAS.match(alias):
        return alias
    return "h-" + hashlib.sha256(alias.encode()).hexdigest()[:32]


# Keys are built for every alias on every send_messages(): memoized.
@functools.lru_cache(maxsize=4096)
def key(alias: str, part: str) -> str:
    return f"{KEY_PREFIX}{alias_key(alias)}:{part}"


def window_key(alias: str, policy: BreakerPolicy, bucket: int) -> str:
    # The bucket width is part of the key so that processes running with a
    # different window (during a deploy that changes it) never mix counts.
    return _window_key(alias, round(policy.bucket_width * 1000), bucket)


@functools.lru_cache(maxsize=4096)
def _window_key(alias: str, width_ms: int, bucket: int) -> str:
    return key(alias, f"w{width_ms}:{bucket}")


@functools.lru_cache(maxsize=1024)
def _read_keys(
    alias: str, width_ms: int, first_bucket: int, end_bucket: int
) -> tuple[tuple[str, tuple[str, str, Any]], ...]:
    """Every key ``read`` fetches for one alias, with what each one holds.
    Memoized: the bucket range changes once per bucket width."""
    parts = ("breaker", "fails", "drain", "error")
    fixed = [(key(alias, part), (alias, part, None)) for part in parts]
    window = [
        (_window_key(alias, width_ms, bucket), (alias, "window", bucket))
        for bucket in range(first_bucket, end_bucket)
    ]
    return tuple(fixed + window)


@functools.lru_cache(maxsize=256)
def _slot_keys(slots: tuple[tuple[str, str], ...]) -> tuple[tuple[str, tuple[str, str, Any]], ...]:
    return tuple((key(alias, part), (alias, part, _SOURCE)) for alias, part in slots)


@dataclass(frozen=True, slots=True)
class Drain:
    """A mailer taken out of rotation by an operator."""

    since: float
    until: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Any) -> Drain | None:
        if not isinstance(data, Mapping):
            return None
        try:
            until = data.get("until")
            return cls(
                float(data.get("since", 0.0)),
                None if until is None else float(until),
                str(data.get("reason", "")),
            )
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class LastError:
    """The most recent failure that counted against a mailer (text already redacted)."""

    at: float
    outcome: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "outcome": self.outcome, "text": self.text}

    @classmethod
    def from_dict(cls, data: Any) -> LastError | None:
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(float(data["at"]), str(data["outcome"]), str(data["text"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class MailerHealth:
    """One mailer's shared health as read in one round trip."""

    alias: str
    breaker: Breaker = field(default_factory=Breaker)
    consecutive: int = 0
    #: bucket index → packed counter, for the buckets of the window at read time.
    buckets: Mapping[int, int] = field(default_factory=dict)
    drain: Drain | None = None
    last_error: LastError | None = None

    def window(self, policy: BreakerPolicy, now: float) -> WindowCounts:
        failures = attempts = 0
        for bucket in policy.window_buckets(now):
            f, a = unpack(self.buckets.get(bucket, 0))
            failures += f
            attempts += a
        return WindowCounts(failures, attempts)

    def troubled(self, policy: BreakerPolicy, now: float) -> bool:
        """Whether recent failures are on record (so successes are worth writing)."""
        if self.consecutive > 0:
            return True
        return bool(self.buckets) and self.window(policy, now).failures > 0

    def drained(self, now: float) -> bool:
        return self.drain is not None and (self.drain.until is None or now < self.drain.until)


@functools.lru_cache(maxsize=1024)
def _nothing_on_record(alias: str) -> MailerHealth:
    """The health of a mailer with nothing stored: the common case, shared
    (the record is frozen and its empty window cannot be changed)."""
    return MailerHealth(alias, buckets=MappingProxyType({}))


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _incr(cache: BaseCache, cache_key: str, delta: int, ttl: int) -> int:
    """Atomic increment that creates the key (with a TTL) when it is missing."""
    try:
        return int(cache.incr(cache_key, delta))
    except ValueError:  # missing (or expired) key
        if cache.add(cache_key, delta, ttl):
            return delta
        # Another process created it between our incr and add.
        return int(cache.incr(cache_key, delta))


def cache_kind(backend: BaseCache | None) -> str:
    """'shared' (Redis, memcached: shared and atomic), 'shared-nonatomic'
    (database, file), or 'local' (local memory, dummy, embedded)."""
    if backend is None:
        return "local"
    name = f"{type(backend).__module__}.{type(backend).__qualname__}".lower()
    if "locmem" in name or "dummy" in name:
        return "local"
    if ".db." in name or "databasecache" in name or "filebased" in name:
        return "shared-nonatomic"
    return "shared"


class HealthStore:
    """Breaker state of mailers in one Django cache alias (or embedded memory).

    Thread-safe; one instance per cache alias per process (see
    ``store_for``). Every public method returns normally whatever the cache
    does: on a cache error it runs against the per-process fallback.
    """

    def __init__(self, cache_alias: str | None) -> None:
        self.cache_alias = cache_alias
        self._embedded: BaseCache | None = None
        if cache_alias is None:
            self._embedded = ProcessMemory()
        self._local: BaseCache = ProcessMemory()
        self._fallback: CacheFallback[BaseCache] = CacheFallback(
            self.backend, self._local, what="health cache", label=self.label,
            cache_alias=cache_alias, meanwhile="using per-process breaker state",
            resumed="using shared breaker state",
        )
        #: Every operation goes through the fallback (bound once: no extra call).
        self._run = self._fallback.run

    # -- plumbing --------------------------------------------------------------

    @property
    def label(self) -> str:
        return EMBEDDED if self.cache_alias is None else f"CACHES[{self.cache_alias!r}]"

    def backend(self) -> BaseCache:
        """The configured cache (Django keeps one instance per thread)."""
        if self._embedded is not None:
            return self._embedded
        return caches[self.cache_alias]  # type: ignore[index]

    @property
    def kind(self) -> str:
        return "local" if self._embedded is not None else cache_kind(self.backend())

    # -- reads -------------------------------------------------------------------

    def read(
        self, aliases: Iterable[str], policy: Callable[[str], BreakerPolicy], now: float,
        *, slots: tuple[tuple[str, str], ...] = (),
        slots_found: dict[tuple[str, str], Any] | None = None,
    ) -> dict[str, MailerHealth]:
        """Every alias's health in ONE cache round trip (``get_many``).

        ``slots``: (alias, key part) of health sources' records to read in
        the same round trip, into ``slots_found`` (only the records stored).
        """
        aliases = list(dict.fromkeys(aliases))
        wanted: dict[str, tuple[str, str, Any]] = {}
        if slots:
            wanted.update(_slot_keys(slots))
        for alias in aliases:
            alias_policy = policy(alias)
            buckets = (
                alias_policy.window_buckets(now)
                if alias_policy.failure_rate is not None
                else range(0)  # no rate rule, no window to read
            )
            width_ms = round(alias_policy.bucket_width * 1000)
            wanted.update(_read_keys(alias, width_ms, buckets.start, buckets.stop))
        if not wanted:
            return {}
        found = self._run(lambda cache: cache.get_many(list(wanted)))
        parts: dict[str, dict[str, Any]] = {}
        for cache_key, value in found.items():
            alias, part, bucket = wanted[cache_key]
            if bucket is _SOURCE:
                if slots_found is not None:
                    slots_found[alias, part] = value
                continue
            entry = parts.setdefault(alias, {"buckets": {}})
            if part == "window":
                entry["buckets"][bucket] = _as_int(value)
            else:
                entry[part] = value
        result: dict[str, MailerHealth] = {}
        for alias in aliases:
            found_parts = parts.get(alias)
            if found_parts is None:
                result[alias] = _nothing_on_record(alias)
                continue
            result[alias] = MailerHealth(
                alias,
                Breaker.from_dict(found_parts.get("breaker")),
                _as_int(found_parts.get("fails")),
                found_parts["buckets"],
                Drain.from_dict(found_parts.get("drain")),
                LastError.from_dict(found_parts.get("error")),
            )
        return result

    def load_breaker(self, alias: str) -> Breaker:
        return Breaker.from_dict(self._run(lambda cache: cache.get(key(alias, "breaker"))))

    def probe_holder(self, alias: str, generation: int) -> str | None:
        value = self._run(lambda cache: cache.get(key(alias, f"probe:{generation}")))
        return None if value is None else str(value)

    # -- writes (failures and state changes only) ---------------------------------

    def record_failure(
        self, alias: str, policy: BreakerPolicy, now: float, error: LastError
    ) -> tuple[int, int | None]:
        """Count one failure; return (consecutive failures, this window bucket's
        packed value, or None when the rate rule is off)."""
        ttl = policy.record_ttl()

        def operation(cache: BaseCache) -> tuple[int, int | None]:
            consecutive = _incr(cache, key(alias, "fails"), 1, ttl)
            bucket_value = None
            if policy.failure_rate is not None:
                bucket_value = _incr(
                    cache,
                    window_key(alias, policy, policy.bucket(now)),
                    pack(1, 1),
                    math.ceil(policy.window + policy.bucket_width) + 1,
                )
            cache.set(key(alias, "error"), error.to_dict(), ttl)
            return consecutive, bucket_value

        return self._run(operation)

    def record_successes(
        self, alias: str, policy: BreakerPolicy, now: float, count: int, *, reset: bool
    ) -> None:
        """Add successes to the window and, if ``reset``, end the failure streak."""

        def operation(cache: BaseCache) -> None:
            if reset:
                cache.delete(key(alias, "fails"))
            if count and policy.failure_rate is not None:
                _incr(
                    cache,
                    window_key(alias, policy, policy.bucket(now)),
                    pack(0, count),
                    math.ceil(policy.window + policy.bucket_width) + 1,
                )

        self._run(operation)

    def reset_failures(self, alias: str) -> None:
        self._run(lambda cache: cache.delete(key(alias, "fails")))

    def clear_counters(self, alias: str, policy: BreakerPolicy, now: float) -> None:
        """Forget the failure streak and the window (after the breaker closed)."""
        keys = [key(alias, "fails")]
        keys += [window_key(alias, policy, b) for b in policy.window_buckets(now)]
        self._run(lambda cache: cache.delete_many(keys))

    def claim(self, alias: str, generation: int, owner: str) -> bool:
        """Claim the right to make transition ``generation`` (once per fleet)."""
        return bool(
            self._run(lambda cache: cache.add(key(alias, f"claim:{generation}"), owner, CLAIM_TTL))
        )

    def save_breaker(self, alias: str, breaker: Breaker, ttl: int) -> None:
        self._run(lambda cache: cache.set(key(alias, "breaker"), breaker.to_dict(), ttl))

    def acquire_probe(self, alias: str, generation: int, owner: str, ttl: int) -> bool:
        """Take the probe lease of opening ``generation``: True for exactly one
        caller until the lease expires or is released."""
        return bool(
            self._run(lambda cache: cache.add(key(alias, f"probe:{generation}"), owner, ttl))
        )

    def release_probe(self, alias: str, generation: int) -> None:
        self._run(lambda cache: cache.delete(key(alias, f"probe:{generation}")))

    def set_drain(self, alias: str, drain: Drain) -> None:
        ttl = None if drain.until is None else max(1, math.ceil(drain.until - drain.since))
        self._run(lambda cache: cache.set(key(alias, "drain"), drain.to_dict(), ttl))

    def clear_drain(self, alias: str) -> bool:
        return bool(self._run(lambda cache: cache.delete(key(alias, "drain"))))

    # -- plain values (health sources keep their records and leases here) --------

    def get_value(self, alias: str, part: str) -> Any:
        return self._run(lambda cache: cache.get(key(alias, part)))

    def set_value(self, alias: str, part: str, value: Any, ttl: int | None) -> None:
        self._run(lambda cache: cache.set(key(alias, part), value, ttl))

    def add_value(self, alias: str, part: str, value: Any, ttl: int) -> bool:
        """``cache.add``: True for exactly one caller until the key expires."""
        return bool(self._run(lambda cache: cache.add(key(alias, part), value, ttl)))

    def check_reachable(self) -> None:
        """Raise the cache's own error if it cannot be reached (for the command)."""
        self.backend().get(key("-", "ping"))

    def forget(self) -> None:
        """Drop all per-process state (embedded store and fallback)."""
        if self._embedded is not None:
            self._embedded.clear()
        self._local.clear()
        self._fallback.forget()


_stores: dict[str | None, HealthStore] = {}
_stores_lock = threading.Lock()


def store_for(settings: HealthSettings) -> HealthStore:
    """The process-wide store of the settings' cache alias."""
    store = _stores.get(settings.cache)
    if store is None:
        with _stores_lock:
            store = _stores.setdefault(settings.cache, HealthStore(settings.cache))
    return store


def reset_stores() -> None:
    """Forget all per-process health state (tests, settings changes)."""
    with _stores_lock:
        for store in _stores.values():
            store.forget()
        _stores.clear()


on_reset("mailrouter.health.store", reset_stores)
