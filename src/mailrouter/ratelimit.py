"""Rate limits per mailer (router option ``rate_limits``), shared by the fleet.

Strategy separated from storage, as in the ``limits`` package:

- The strategy is GCRA (a token bucket kept as one number, the "theoretical
  arrival time" ``tat``): a limit of ``N`` per period refills one token every
  ``period / N`` seconds and holds at most ``N``. Reserving ``n`` tokens moves
  ``tat`` forward by ``n`` intervals; a reservation may be granted in part.
- The storage keeps ``tat`` per mailer: :class:`MemoryStorage` per process
  (the embedded default), :class:`RedisStorage` in the health cache's Redis,
  where ONE Lua script reads the server clock, returns unused tokens,
  reserves what is available and answers how long until the next token — one
  round trip per reservation, atomic across every process.

:class:`RateLimiter` is what a router's failover loop uses. It reserves
budget for the whole batch at once (as many tokens as the batch has messages
left, up to the limit), hands them out from memory, remembers locally until
when an exhausted mailer has no budget (no round trip per overflowing
message), and gives unused tokens back at the end of the batch.

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
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.signals import setting_changed

logger = logging.getLogger("mailrouter")

#: Seconds a message waits for budget when every candidate is out of it.
DEFAULT_MAX_WAIT = 10.0
KEY_PREFIX = "mailrouter:rate:"
#: How the reason of a ``skipped`` attempt for want of budget begins.
RATE_LIMITED = "rate limit"
#: Seconds to enforce limits per process after Redis failed, before retrying it.
RETRY_INTERVAL = 5.0
WARN_INTERVAL = 60.0

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smhd])\s*$", re.IGNORECASE)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``count`` messages per ``period`` seconds, with bursts of at most ``count``."""

    count: int
    period: float
    text: str

    @property
    def interval(self) -> float:
        """Seconds per token."""
        return self.period / self.count


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
    #: Tokens in use (consumed and not yet refilled) after this call.
    used: int


class RateStorage(Protocol):
    label: str

    def reserve(self, alias: str, limit: RateLimit, wanted: int, refund: int = 0) -> Reservation:
        """Give back ``refund`` unused tokens, then reserve up to ``wanted``."""
        ...


def _gcra(
    tat: float, now: float, limit: RateLimit, wanted: int, refund: int
) -> tuple[float, Reservation]:
    """The strategy itself, for :class:`MemoryStorage` (the Lua script is the
    same computation in integer microseconds)."""
    interval = limit.interval
    tat = max(tat, now)
    if refund:
        tat = max(now, tat - refund * interval)
    available = max(0, math.floor((now + limit.period - tat) / interval + 1e-9))
    granted = min(available, wanted)
    tat += granted * interval
    retry = 0.0
    if granted < wanted:
        retry = max(0.0, tat + interval - limit.period - now)
    used = min(limit.count, math.ceil((tat - now) / interval - 1e-9))
    return tat, Reservation(granted, retry, used)


class MemoryStorage:
    """Per-process budgets (the embedded default, and the Redis fallback)."""

    label = "per process"

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

    def reserve(self, alias: str, limit: RateLimit, wanted: int, refund: int = 0) -> Reservation:
        with self._lock:
            now = time.monotonic()
            tat, reservation = _gcra(self._tat.get(alias, now), now, limit, wanted, refund)
            self._tat[alias] = tat
            return reservation

    def clear(self) -> None:
        with self._lock:
            self._tat.clear()


#: KEYS[1] = the mailer's tat key; ARGV = interval µs, capacity (tokens),
#: tokens wanted, tokens refunded. Returns {granted, µs until the next token,
#: tokens in use}. Integers in microseconds: exact in Lua's doubles until 2255.
GCRA_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local refund = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
local tat = math.max(stored, now)
if refund > 0 then tat = math.max(now, tat - refund * interval) end
local period = capacity * interval
local available = math.max(0, math.floor((now + period - tat) / interval))
local granted = math.min(available, wanted)
tat = tat + granted * interval
if granted > 0 or refund > 0 then
  if tat > now then
    redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',
               math.ceil((tat - now) / 1000) + 1000)
  else
    redis.call('DEL', KEYS[1])
  end
end
local retry = 0
if granted < wanted then retry = math.max(0, tat + interval - period - now) end
local used = math.min(capacity, math.ceil((tat - now) / interval))
return {granted, retry, used}
"""
GCRA_SHA = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()


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

    def reserve(self, alias: str, limit: RateLimit, wanted: int, refund: int = 0) -> Reservation:
        from django.core.cache import caches

        client = redis_client(caches[self.cache_alias])
        args = (round(limit.interval * 1_000_000), limit.count, wanted, refund)
        key = self.key(alias)
        from redis.exceptions import NoScriptError

        try:
            reply = client.evalsha(GCRA_SHA, 1, key, *args)
        except NoScriptError:  # first use on this server (or after SCRIPT FLUSH)
            reply = client.eval(GCRA_SCRIPT, 1, key, *args)
        granted, retry_us, used = (int(value) for value in reply)
        return Reservation(granted, retry_us / 1_000_000, used)


class FallbackStorage:
    """Shared storage that falls back to per-process budgets while it fails."""

    def __init__(self, shared: RedisStorage) -> None:
        self.shared = shared
        self.local = MemoryStorage()
        self.label = shared.label
        self._failed_at: float | None = None
        self._warned_at: float | None = None
        self._lock = threading.Lock()

    def reserve(self, alias: str, limit: RateLimit, wanted: int, refund: int = 0) -> Reservation:
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() < failed_at + RETRY_INTERVAL:
            return self.local.reserve(alias, limit, wanted, refund)
        try:
            reservation = self.shared.reserve(alias, limit, wanted, refund)
        except Exception as error:  # any client error: limits must not stop sending
            self._failed(error)
            return self.local.reserve(alias, limit, wanted, refund)
        self._failed_at = None
        return reservation

    def _failed(self, error: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self._failed_at = now
            if self._warned_at is not None and now - self._warned_at < WARN_INTERVAL:
                return
            self._warned_at = now
        logger.warning(
            "rate-limit storage %s is unreachable (%s); enforcing rate limits "
            "per process until it answers again",
            self.label, type(error).__name__,
            extra={"mailrouter_cache": self.shared.cache_alias},
        )


_storages: dict[str | None, RateStorage] = {}
_storages_lock = threading.Lock()


def storage_for(cache_alias: str | None) -> RateStorage:
    """The process-wide rate storage of a health cache alias: Redis when the
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


def reset_storages(**_: Any) -> None:
    """Forget per-process budgets (tests, settings changes)."""
    with _storages_lock:
        _storages.clear()


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    if setting in ("CACHES", "MAILERS", "MAILROUTER", "EMAIL_BACKEND"):
        reset_storages()


setting_changed.connect(_on_setting_changed, dispatch_uid="mailrouter.ratelimit")


class RateLimiter:
    """One router's view of its rate limits during a batch. Thread-safe: the
    worker threads of a concurrent batch share it."""

    def __init__(self, limits: Mapping[str, RateLimit], storage: RateStorage) -> None:
        self.limits = limits
        self.storage = storage
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        #: alias → monotonic time before which the shared budget is known empty.
        self._empty_until: dict[str, float] = {}
        self._remaining = 0

    def begin_batch(self, size: int) -> None:
        with self._lock:
            self._remaining = size

    def acquire(self, alias: str) -> str | None:
        """Take one token for ``alias``: None when granted, else why not (the
        reason of the ``skipped`` attempt)."""
        limit = self.limits.get(alias)
        if limit is None:
            return None
        with self._lock:
            if self._held.get(alias, 0) > 0:
                self._held[alias] -= 1
                self._remaining = max(0, self._remaining - 1)
                return None
            now = time.monotonic()
            empty_until = self._empty_until.get(alias, 0.0)
            if now < empty_until:
                return self._reason(limit, empty_until - now)
            wanted = max(1, min(limit.count, self._remaining))
            reservation = self.storage.reserve(alias, limit, wanted)
            if reservation.granted < wanted:
                self._empty_until[alias] = now + max(reservation.retry_after, 0.001)
            if reservation.granted == 0:
                return self._reason(limit, reservation.retry_after)
            self._held[alias] = reservation.granted - 1
            self._remaining = max(0, self._remaining - 1)
            return None

    def release(self, alias: str) -> None:
        """Give back a token taken for an attempt that did not happen."""
        if alias in self.limits:
            with self._lock:
                self._held[alias] = self._held.get(alias, 0) + 1

    def seconds_until_budget(self, aliases: Collection[str]) -> float:
        """How long until one of ``aliases`` may have budget again (0: now)."""
        now = time.monotonic()
        with self._lock:
            waits = [max(0.0, self._empty_until.get(alias, 0.0) - now) for alias in aliases]
        return min(waits, default=0.0)

    def end_batch(self) -> None:
        """Give unused tokens back, so other processes can use them."""
        with self._lock:
            held, self._held = self._held, {}
        for alias, count in held.items():
            if count > 0:
                try:
                    self.storage.reserve(alias, self.limits[alias], 0, refund=count)
                except Exception as error:  # the tokens expire on their own
                    logger.debug("returning rate budget of %s failed: %r", alias, error)

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
    storage = storage_for(router.config.health_settings.cache)
    row.update(
        rate_limit=limit.text,
        rate_used=current_use(alias, limit, storage),
        rate_capacity=limit.count,
        rate_storage=storage.label,
    )
