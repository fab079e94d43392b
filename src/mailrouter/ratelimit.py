"""Rate limits per mailer (router option ``rate_limits``), shared by the fleet.

Strategy separated from storage, as in the ``limits`` package:

- The strategy is GCRA (a token bucket kept as one number, the "theoretical
  arrival time" ``tat``): a limit of ``N`` per period refills one token every
  ``period / N`` seconds (rounded up to the microsecond) and holds ``burst``
  tokens, 1 unless configured. With the default, grants are at least one
  interval apart, so any window of the period admits at most ``N``; a
  ``burst`` of ``B`` lets ``B`` go at once, and a window then admits at most
  ``N + B - 1``.
- The storage keeps ``tat`` per mailer: :class:`MemoryStorage` per process
  (the embedded default), :class:`RedisStorage` in the health cache's Redis,
  where ONE Lua script reads the server clock, returns refunded tokens,
  reserves what is available and answers how long until the next token — one
  round trip per reservation, atomic across every process.

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
    """``count`` messages per ``period`` seconds; ``burst`` of them at once."""

    count: int
    period: float
    text: str
    burst: int = 1

    @property
    def interval_us(self) -> int:
        """Microseconds per token, rounded up: ``count`` intervals never
        span less than the period (``"3/s"`` is 333,334 µs, not 333,333)."""
        return math.ceil(self.period * 1_000_000 / self.count)

    @property
    def interval(self) -> float:
        """Seconds per token."""
        return self.interval_us / 1_000_000

    @property
    def label(self) -> str:
        """How ``status`` and skip reasons name the limit."""
        return self.text if self.burst == 1 else f"{self.text} burst {self.burst}"


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
    """Validate the router option ``rate_limits``: alias → ``"N/unit"``, or
    alias → ``{"rate": "N/unit", "burst": B}``."""
    if not isinstance(raw, Mapping):
        problems.append(f"{label}: 'rate_limits' must be a dict of mailer alias → rate like '14/s'")
        return {}
    limits: dict[str, RateLimit] = {}
    for alias, value in raw.items():
        if alias not in aliases:
            problems.append(f"{label}: 'rate_limits' names {alias!r}, which is not a mailer alias")
            continue
        limit = _parse_one(value, f"{label}: 'rate_limits'[{alias!r}]", problems)
        if limit is not None:
            limits[alias] = limit
    return limits


def _parse_one(value: Any, where: str, problems: list[str]) -> RateLimit | None:
    burst: Any = 1
    text = value
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in ("rate", "burst"))
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (use 'rate', 'burst')")
            return None
        text, burst = value.get("rate"), value.get("burst", 1)
    limit = parse_rate(text)
    if limit is None:
        problems.append(
            f"{where} must be a rate such as '14/s', '1000/m', '50000/h' or '10/5s' "
            f"(or {{'rate': '14/s', 'burst': 5}}), not {text!r}"
        )
        return None
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        problems.append(f"{where}: 'burst' must be a whole number of messages ≥ 1, not {burst!r}")
        return None
    return RateLimit(limit.count, limit.period, limit.text, burst)


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: int
    #: Seconds until the next token, when fewer were granted than wanted.
    retry_after: float
    #: Tokens of the burst in use (consumed and not yet refilled) after this call.
    used: int
    #: The storage that granted the tokens: the only one a refund may go to
    #: (a fallback's answer names its per-process storage, not Redis).
    lender: RateStorage | None = None


class RateStorage(Protocol):
    label: str

    def reserve(self, alias: str, limit: RateLimit, wanted: int, refund: int = 0) -> Reservation:
        """Give back ``refund`` unused tokens, then reserve up to ``wanted``."""
        ...


def _gcra(
    tat: int, now: int, limit: RateLimit, wanted: int, refund: int
) -> tuple[int, Reservation]:
    """The strategy itself, for :class:`MemoryStorage`: the Lua script is the
    same computation in integer microseconds (and so is this one, passed
    microseconds)."""
    interval = limit.interval_us
    tolerance = limit.burst * interval
    tat = max(tat, now)
    if refund:
        tat = max(now, tat - refund * interval)
    available = max(0, (now + tolerance - tat) // interval)
    granted = min(available, wanted)
    tat += granted * interval
    retry = 0
    if granted < wanted:
        retry = max(0, tat + interval - tolerance - now)
    used = min(limit.burst, -((now - tat) // interval))
    return tat, Reservation(granted, retry / 1_000_000, used)


def _now_us() -> int:
    return time.monotonic_ns() // 1000


class MemoryStorage:
    """Per-process budgets (the embedded default, and the Redis fallback)."""

    label = "per process"

    def __init__(self) -> None:
        self._tat: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, alias: str, limit: RateLimit, wanted: int, refund: int = 0) -> Reservation:
        with self._lock:
            now = _now_us()
            tat, reservation = _gcra(self._tat.get(alias, now), now, limit, wanted, refund)
            self._tat[alias] = tat
            return replace(reservation, lender=self)

    def clear(self) -> None:
        with self._lock:
            self._tat.clear()


#: KEYS[1] = the mailer's tat key; ARGV = interval µs, burst (tokens),
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
local tolerance = capacity * interval
local available = math.max(0, math.floor((now + tolerance - tat) / interval))
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
if granted < wanted then retry = math.max(0, tat + interval - tolerance - now) end
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
        args = (limit.interval_us, limit.burst, wanted, refund)
        key = self.key(alias)
        from redis.exceptions import NoScriptError

        try:
            reply = client.evalsha(GCRA_SHA, 1, key, *args)
        except NoScriptError:  # first use on this server (or after SCRIPT FLUSH)
            reply = client.eval(GCRA_SCRIPT, 1, key, *args)
        granted, retry_us, used = (int(value) for value in reply)
        return Reservation(granted, retry_us / 1_000_000, used, self)


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
        """Reserve from Redis, or per process while Redis fails. A refund
        given here goes to Redis; give tokens back to the reservation's
        ``lender`` instead (see :meth:`RateLimiter.release`)."""
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() < failed_at + RETRY_INTERVAL:
            return self.local.reserve(alias, limit, wanted, 0)
        try:
            reservation = self.shared.reserve(alias, limit, wanted, refund)
        except Exception as error:  # any client error: limits must not stop sending
            self._failed(error)
            return self.local.reserve(alias, limit, wanted, 0)
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
            "mailrouter: rate-limit storage %s is unreachable (%s); enforcing rate limits "
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


@dataclass(frozen=True, slots=True)
class Token:
    """One token taken for one attempt, and who lent it."""

    alias: str
    lender: RateStorage | None


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
        return Token(alias, reservation.lender)

    def release(self, token: Token) -> None:
        """Give back a token taken for an attempt that did not happen, to the
        storage that lent it (if that fails, nowhere: it expires on its own)."""
        limit = self.limits.get(token.alias)
        if limit is None or token.lender is None:
            return
        try:
            token.lender.reserve(token.alias, limit, 0, refund=1)
        except Exception as error:
            logger.debug("mailrouter: returning rate budget of %s failed: %r", token.alias, error)

    def seconds_until_budget(self, aliases: Collection[str]) -> float:
        """How long until one of ``aliases`` may have budget again (0: now)."""
        now = time.monotonic()
        with self._lock:
            waits = [max(0.0, self._empty_until.get(alias, 0.0) - now) for alias in aliases]
        return min(waits, default=0.0)

    @staticmethod
    def _reason(limit: RateLimit, retry_after: float) -> str:
        return f"{RATE_LIMITED} {limit.label} reached; budget again in {retry_after:.2f}s"


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
        rate_limit=limit.label,
        rate_used=current_use(alias, limit, storage),
        rate_capacity=limit.burst,
        rate_storage=storage.label,
    )
