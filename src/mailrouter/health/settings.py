"""The router option ``health`` → validated :class:`HealthSettings`.

Validation happens with the rest of the router's options (construction and
system checks), so every mistake is reported at startup with the router's
label and the offending key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from django.utils.module_loading import import_string

from ..shared_state.aliases import parse_cache_alias
from .breaker import BreakerPolicy

Clock = Callable[[], float]

#: Keys of the ``health`` option, in documentation order.
HEALTH_KEYS = (
    "enabled",
    "cache",
    "failure_threshold",
    "window",
    "failure_rate",
    "min_attempts",
    "cooldown",
    "max_cooldown",
    "mailers",
    "clock",
)
#: Keys that may also be set per mailer under ``health["mailers"][alias]``.
POLICY_KEYS = tuple(f.name for f in fields(BreakerPolicy))


@dataclass(frozen=True)
class HealthSettings:
    """Validated health configuration of one router.

    ``cache`` is a ``CACHES`` alias, or None for the embedded per-process
    local-memory store. ``clock`` returns wall-clock seconds; tests inject a
    controllable one.
    """

    enabled: bool = True
    cache: str | None = None
    default: BreakerPolicy = field(default_factory=BreakerPolicy)
    overrides: Mapping[str, BreakerPolicy] = field(default_factory=dict)
    clock: Clock = time.time

    def policy(self, alias: str) -> BreakerPolicy:
        return self.overrides.get(alias, self.default)


def parse_health(
    raw: Any,
    label: str,
    aliases: Container[str],
    source: str,
    problems: list[str],
    *,
    routers: Container[str] = frozenset(),
) -> HealthSettings:
    """Validate the ``health`` option; append every problem to ``problems``.

    ``aliases`` are the known mailer aliases (``source`` names where they are
    defined), for the per-mailer overrides; ``routers`` those of them that are
    routers, which are never health-tracked and so take no overrides.
    """
    where = f"{label}: 'health'"
    if raw is None or raw is False:
        return HealthSettings(enabled=False)
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be a dict (or False to switch health tracking off)")
        return HealthSettings()
    for key in raw:
        if key not in HEALTH_KEYS:
            problems.append(
                f"{where} has unknown key {key!r} (expected one of: {', '.join(HEALTH_KEYS)})"
            )
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"{where}['enabled'] must be True or False, not {enabled!r}")
        enabled = True
    cache = parse_cache_alias(raw.get("cache"), f"{where}['cache']", problems)
    default = _parse_policy(raw, BreakerPolicy(), where, problems)
    overrides: dict[str, BreakerPolicy] = {}
    per_mailer = raw.get("mailers", {})
    if not isinstance(per_mailer, Mapping):
        problems.append(f"{where}['mailers'] must be a dict of mailer alias → overrides")
        per_mailer = {}
    for alias, entry in per_mailer.items():
        entry_where = f"{where}['mailers'][{alias!r}]"
        if alias not in aliases:
            problems.append(f"{entry_where}: {alias!r} is not in {source}")
            continue
        if alias in routers:
            problems.append(
                f"{entry_where}: {alias!r} is a router, and routers are not health-tracked "
                "(set the overrides of the mailers it routes to)"
            )
            continue
        if not isinstance(entry, Mapping):
            problems.append(f"{entry_where} must be a dict of {', '.join(POLICY_KEYS)}")
            continue
        for key in entry:
            if key not in POLICY_KEYS:
                problems.append(
                    f"{entry_where} has unknown key {key!r} "
                    f"(per-mailer keys: {', '.join(POLICY_KEYS)})"
                )
        overrides[alias] = _parse_policy(entry, default, entry_where, problems)
    clock = _parse_clock(raw.get("clock"), where, problems)
    return HealthSettings(enabled, cache, default, overrides, clock)


def _parse_policy(
    raw: Mapping[str, Any], base: BreakerPolicy, where: str, problems: list[str]
) -> BreakerPolicy:
    """A policy from ``raw``'s policy keys, defaulting to ``base``'s values."""
    values: dict[str, Any] = {}
    for name in ("failure_threshold", "min_attempts"):
        if name not in raw:
            continue
        value = raw[name]
        nullable = name == "failure_threshold"
        if (value is None and nullable) or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            values[name] = value
        else:
            extra = " or None" if nullable else ""
            problems.append(f"{where}['{name}'] must be an integer ≥ 1{extra}, not {value!r}")
    for name in ("window", "cooldown", "max_cooldown"):
        if name not in raw:
            continue
        value = raw[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            values[name] = float(value)
        else:
            problems.append(
                f"{where}['{name}'] must be a positive number of seconds, not {value!r}"
            )
    if "failure_rate" in raw:
        value = raw["failure_rate"]
        if value is None or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
        ):
            values["failure_rate"] = None if value is None else float(value)
        else:
            problems.append(
                f"{where}['failure_rate'] must be a fraction in (0, 1] or None, not {value!r}"
            )
    policy = BreakerPolicy(**{**_as_kwargs(base), **values})
    if policy.max_cooldown < policy.cooldown:
        problems.append(
            f"{where}: 'max_cooldown' ({policy.max_cooldown:g}s) is shorter than "
            f"'cooldown' ({policy.cooldown:g}s)"
        )
    return policy


def _as_kwargs(policy: BreakerPolicy) -> dict[str, Any]:
    return {name: getattr(policy, name) for name in POLICY_KEYS}


def _parse_clock(value: Any, where: str, problems: list[str]) -> Clock:
    if value is None:
        return time.time
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as error:
            problems.append(f"{where}['clock'] {value!r} cannot be imported: {error}")
            return time.time
    if not callable(value):
        problems.append(f"{where}['clock'] must be a callable returning seconds, not {value!r}")
        return time.time
    clock: Clock = value
    return clock
