"""Rate limits per mailer (router option ``rate_limits``), shared by the fleet.

Strategy separated from storage, as in the ``limits`` package:

- The strategy is a sliding window kept in ``BUCKETS`` counters: a limit of
  ``N`` per period admits at most ``N`` messages in ANY window of one period
  (not "per calendar second"), and up to ``N`` of them at once. The period is
  cut into ``BUCKETS`` slices; a token is granted only while the slices that
  may still hold a message of the last period (one more than ``BUCKETS``, so
  the count is never short) hold fewer than ``N``. So a message counts for at
  most one period plus one slice (2 % more), never less.
- The storage keeps the slice counters per mailer: :class:`MemoryStorage`
  per process (the embedded default), :class:`RedisStorage` in the Redis
  of the router option ``rate_limits_cache`` (default: the health cache;
  one hash per mailer), where ONE Lua script reads the server
  clock, takes back a refunded token, reserves what is available and answers
  how long until the next token — one round trip, atomic across processes.

:class:`RateLimiter` is what a router's failover loop uses. It takes one
token per attempt, right before the attempt, and holds none in advance: a
process that dies mid-batch strands nothing (the token of the attempt it
died in counts as used: that message may have gone out), and a batch takes
budget only for the messages that actually reach the mailer. It remembers
locally until when an exhausted mailer has no budget, so overflowing
messages cost no round trip. A token taken for an attempt that did not
happen goes back to the storage that granted it — never to Redis for a token
the per-process fallback lent during an outage.

If Redis cannot be reached, limits are enforced per process until it answers
again (a warning is logged): sending never stops because of the cache.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .shared_state.fallback import CacheFallback
from .shared_state.registry import on_reset

logger = logging.getLogger("mailrouter")

#: Seconds a message waits for budget when every candidate is out of it.
DEFAULT_MAX_WAIT = 10.0
KEY_PREFIX = "mailrouter:ratewin:"
#: Slices of a period the sliding window counts in.
BUCKETS = 50
#: How the reason of a ``skipped`` attempt for want of budget begins.
RATE_LIMITED = "rate limit"

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smhd])\s*$", re.IGNORECASE)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` messages in any window of ``period`` seconds."""

    count: int
    period: float
    text: str

    @property
    def bucket_us(self) -> int:
        """Microseconds per slice, rounded up: ``BUCKETS`` slices never span
        less than the period."""
        return math.ceil(self.period * 1_000_000 / BUCKETS)


def parse_rate(text: Any) -> RateLimit | None:
    """``"14/s"``, ``"1000/m"``, ``"50000/h"``, ``"100/d"``, ``"10/5s"`` → RateLimit."""
    if not isinstance(text, str):
        return None
    match = _RATE.match(text)
    if match is None or int(match.group(1)) < 1:
        return None
    multiple = float(match.group(2)) if match.group(2) else 1.0
    if multiple <= 0:
        return None
    period = multiple * _UNITS[match.group(3).lower()]
    return RateLimit(int(match.group(1)), period, text.strip())


def parse_rate_limits(
    raw: Any, label: str, aliases: Container[str], problems: list[str]
) -> dict[str, RateLimit]:
    """Validate the router option ``rate_limits``: alias → ``"N/unit"``."""
    if not isinstance(raw, Mapping):
        problems.append(f"{label}: 'rate_limits' must be a dict of mailer alias → rate like '14/s'")
        return {}
    limits: dict[str, RateLimit] = {}
    for alias, text in raw.items():
        if alias not in aliases:
            problems.append(f"{label}: 'rate_limits' names {alias!r}, which is not a mailer alias")
            continue
        limit = parse_rate(text)
        if limit is None:
            problems.append(
                f"{label}: 'rate_limits'[{alias!r}] must be a rate such as '14/s', '1000/m', "
                f"'50000/h' or '10/5s', not {text!r}"
            )
            continue
        limits[alias] = limit
    return limits


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: int
    #: Seconds until the next token, when fewer were granted than wanted.
    retry_after: float
    #: Messages counted in the window (the last period) after this call.
    used: int
    #: The slice the tokens were counted in: a refund names it.
    bucket: int = 0
    #: The storage that granted the tokens: the only one a refund may go to
    #: (a fallback's answer names its per-process storage, not Redis).
    lender: RateStorage | None = None


class RateStorage(Protocol):
    label: str

    def reserve(
        self, alias: str, limit: RateLimit, wanted: int, refund: int = 0, refund_at: int = 0
    ) -> Reservation:
        """Give back ``refund`` tokens counted in slice ``refund_at``, then
        reserve up to ``wanted``."""
        ...


def _window(
    counts: dict[int, int], now: int, limit: RateLimit, wanted: int, refund: int, refund_at: int
) -> Reservation:
    """The strategy itself, on ``counts`` (slice → messages; updated in
    place), at ``now`` in microseconds: the Lua script is the same computation."""
    size = limit.bucket_us
    current = now // size
    oldest = current - BUCKETS
    for stale in [index for index in counts if index < oldest]:
        del counts[stale]
    if refund and refund_at in counts:
        counts[refund_at] = max(0, counts[refund_at] - refund)
    used = sum(counts.values())
    granted = min(wanted, max(0, limit.count - used))
    if granted:
        counts[current] = counts.get(current, 0) + granted
    used += granted
    retry = 0
    if granted < wanted:
        # The oldest slices leave the window first: when has one more room?
        need, freed = used - limit.count + 1, 0
        for index in range(oldest, current + 1):
            freed += counts.get(index, 0)
            if freed >= need:
                retry = (index + BUCKETS + 1) * size - now
                break
    return Reservation(granted, retry / 1_000_000, used, current)


def _now_us() -> int:
    return time.monotonic_ns() // 1000


class MemoryStorage:
    """Per-process budgets (the embedded default, and the Redis fallback)."""

    label = "per process"

    def __init__(self) -> None:
        self._counts: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()

    def reserve(
        self, alias: str, limit: RateLimit, wanted: int, refund: int = 0, refund_at: int = 0
    ) -> Reservation:
        with self._lock:
            counts = self._counts.setdefault(alias, {})
            reservation = _window(counts, _now_us(), limit, wanted, refund, refund_at)
            return replace(reservation, lender=self)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


#: KEYS[1] = the mailer's hash (slice → count); ARGV = slice µs, slices,
#: limit, tokens wanted, tokens refunded, the refund's slice. Returns
#: {granted, µs until the next token, count in the window, slice}.
#: Microseconds since the epoch are exact in Lua's doubles until 2255.
WINDOW_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local size = tonumber(ARGV[1])
local slices = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local refund = tonumber(ARGV[5])
local refund_at = tonumber(ARGV[6])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local current = math.floor(now / size)
local oldest = current - slices
local counts = {}
local stale = {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local index = tonumber(flat[i])
  if index < oldest then stale[#stale + 1] = flat[i] else counts[index] = tonumber(flat[i + 1]) end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
if refund > 0 and counts[refund_at] then
  local left = math.max(0, counts[refund_at] - refund)
  counts[refund_at] = left
  redis.call('HSET', KEYS[1], string.format('%.0f', refund_at), left)
end
local used = 0
for _, count in pairs(counts) do used = used + count end
local granted = math.min(wanted, math.max(0, limit - used))
if granted > 0 then
  counts[current] = (counts[current] or 0) + granted
  redis.call('HINCRBY', KEYS[1], string.format('%.0f', current), granted)
  redis.call('PEXPIRE', KEYS[1], math.ceil((slices + 1) * size / 1000) + 1000)
end
used = used + granted
local retry = 0
if granted < wanted then
  local need = used - limit + 1
  local freed = 0
  for index = oldest, current do
    freed = freed + (counts[index] or 0)
    if freed >= need then
      retry = (index + slices + 1) * size - now
      break
    end
  end
end
return {granted, retry, used, string.format('%.0f', current)}
"""
WINDOW_SHA = hashlib.sha1(WINDOW_SCRIPT.encode()).hexdigest()


def redis_client(cache: Any) -> Any:
    """The redis-py client behind a Django cache, or None if it is not Redis
    (Django's own RedisCache, and django-redis)."""
    inner = getattr(cache, "_cache", None)  # django.core.cache.backends.redis
    if inner is not None and hasattr(inner, "get_client") and "redis" in type(cache).__module__:
        return inner.get_client(None, write=True)
    client = getattr(cache, "client", None)  # django_redis
    if client is not None and hasattr(client, "get_client") and "redis" in type(cache).__module__:
        return client.get_client(write=True)
    return None


class RedisStorage:
    """Budgets in the Redis behind Django cache ``cache_alias`` (Lua, atomic)."""

    def __init__(self, cache_alias: str) -> None:
        self.cache_alias = cache_alias
        self.label = f"CACHES[{cache_alias!r}]"

    def key(self, alias: str) -> str:
        from django.core.cache import caches

        from .health.store import alias_key

        made: str = caches[self.cache_alias].make_key(f"{KEY_PREFIX}{alias_key(alias)}")
        return made

    def reserve(
        self, alias: str, limit: RateLimit, wanted: int, refund: int = 0, refund_at: int = 0
    ) -> Reservation:
        from django.core.cache import caches

        client = redis_client(caches[self.cache_alias])
        args = (limit.bucket_us, BUCKETS, limit.count, wanted, refund, refund_at)
        key = self.key(alias)
        from redis.exceptions import NoScriptError

        try:
            reply = client.evalsha(WINDOW_SHA, 1, key, *args)
        except NoScriptError:  # first use on this server (or after SCRIPT FLUSH)
            reply = client.eval(WINDOW_SCRIPT, 1, key, *args)
        granted, retry_us, used, bucket = (int(value) for value in reply)
        return Reservation(granted, retry_us / 1_000_000, used, bucket, self)


class FallbackStorage:
    """Shared storage that falls back to per-process budgets while it fails."""

    def __init__(self, shared: RedisStorage) -> None:
        self.shared = shared
        self.local = MemoryStorage()
        self.label = shared.label
        local: RateStorage = self.local
        self._fallback: CacheFallback[RateStorage] = CacheFallback(
            self._shared, local, what="rate-limit storage", label=shared.label,
            cache_alias=shared.cache_alias, meanwhile="enforcing rate limits per process",
        )

    def reserve(
        self, alias: str, limit: RateLimit, wanted: int, refund: int = 0, refund_at: int = 0
    ) -> Reservation:
        """Reserve from Redis, or per process while Redis fails. A refund
        given here goes to Redis; give tokens back to the reservation's
        ``lender`` instead (see :meth:`RateLimiter.release`)."""

        def operation(storage: RateStorage) -> Reservation:
            if storage is self.local:  # Redis's slices mean nothing per process
                return storage.reserve(alias, limit, wanted)
            return storage.reserve(alias, limit, wanted, refund, refund_at)

        return self._fallback.run(operation)

    def _shared(self) -> RateStorage:
        return self.shared


_storages: dict[str | None, RateStorage] = {}
_storages_lock = threading.Lock()


def storage_for(cache_alias: str | None) -> RateStorage:
    """The process-wide rate storage of a cache alias (the router option
    ``rate_limits_cache``, by default the health cache): Redis when the
    cache is Redis, else per process (local memory, or a cache without
    atomic scripts — see the README)."""
    storage = _storages.get(cache_alias)
    if storage is not None:
        return storage
    with _storages_lock:
        storage = _storages.get(cache_alias)
        if storage is None:
            storage = _build_storage(cache_alias)
            _storages[cache_alias] = storage
    return storage


def _build_storage(cache_alias: str | None) -> RateStorage:
    if cache_alias is None:
        return MemoryStorage()
    from django.core.cache import caches

    try:
        is_redis = redis_client(caches[cache_alias]) is not None
    except Exception:
        is_redis = False
    if is_redis:
        return FallbackStorage(RedisStorage(cache_alias))
    return MemoryStorage()


def reset_storages() -> None:
    """Forget per-process budgets (tests, settings changes)."""
    with _storages_lock:
        _storages.clear()


on_reset("mailrouter.ratelimit", reset_storages)


@dataclass(frozen=True, slots=True)
class Token:
    """One token taken for one attempt: who lent it, and in which slice."""

    alias: str
    lender: RateStorage | None
    bucket: int = 0


class RateLimiter:
    """One router's rate limits, as its failover loop uses them. Thread-safe:
    the worker threads of a concurrent batch share it."""

    def __init__(self, limits: Mapping[str, RateLimit], storage: RateStorage) -> None:
        self.limits = limits
        self.storage = storage
        self._lock = threading.Lock()
        #: alias → monotonic time before which the shared budget is known empty.
        self._empty_until: dict[str, float] = {}

    def acquire(self, alias: str) -> Token | str:
        """Take one token for an attempt at ``alias`` now: the token, or why
        there is none (the reason of the ``skipped`` attempt)."""
        limit = self.limits.get(alias)
        if limit is None:
            return Token(alias, None)
        now = time.monotonic()
        with self._lock:
            empty_until = self._empty_until.get(alias, 0.0)
        if now < empty_until:
            return self._reason(limit, empty_until - now)
        reservation = self.storage.reserve(alias, limit, 1)
        if reservation.granted == 0:
            with self._lock:
                self._empty_until[alias] = now + max(reservation.retry_after, 0.001)
            return self._reason(limit, reservation.retry_after)
        return Token(alias, reservation.lender, reservation.bucket)

    def release(self, token: Token) -> None:
        """Give back a token taken for an attempt that did not happen, to the
        storage that lent it (if that fails, nowhere: it expires on its own)."""
        limit = self.limits.get(token.alias)
        if limit is None or token.lender is None:
            return
        try:
            token.lender.reserve(token.alias, limit, 0, refund=1, refund_at=token.bucket)
        except Exception as error:
            logger.debug("returning rate budget of %s failed: %r", token.alias, error)

    def seconds_until_budget(self, aliases: Collection[str]) -> float:
        """How long until one of ``aliases`` may have budget again (0: now)."""
        now = time.monotonic()
        with self._lock:
            waits = [max(0.0, self._empty_until.get(alias, 0.0) - now) for alias in aliases]
        return min(waits, default=0.0)

    @staticmethod
    def _reason(limit: RateLimit, retry_after: float) -> str:
        return f"{RATE_LIMITED} {limit.text} reached; budget again in {retry_after:.2f}s"


def current_use(alias: str, limit: RateLimit, storage: RateStorage) -> int:
    """Tokens of ``alias`` in use right now (for ``status``); takes none."""
    return storage.reserve(alias, limit, 0).used


def status_columns(router: Any, alias: str, row: dict[str, Any]) -> None:
    """``status`` row extender: a rate-limited mailer's limit and current use."""
    limit = router.config.rate_limits.get(alias)
    if limit is None:
        return
    storage = storage_for(router.config.rate_limits_cache)
    row.update(
        rate_limit=limit.text,
        rate_used=current_use(alias, limit, storage),
        rate_capacity=limit.count,
        rate_storage=storage.label,
    )
