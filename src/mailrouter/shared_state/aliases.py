"""Validation of the options that name where shared state lives."""

from __future__ import annotations

from typing import Any


def parse_cache_alias(value: Any, option: str, problems: list[str]) -> str | None:
    """A ``CACHES`` alias, or None (the embedded per-process default).
    ``option`` names the option in the problems reported."""
    if value is None:
        return None
    from django.conf import settings

    if not isinstance(value, str) or not value:
        problems.append(f"{option} must be a CACHES alias (a string), not {value!r}")
        return None
    if value not in getattr(settings, "CACHES", {}):
        problems.append(f"{option} names {value!r}, which is not in CACHES")
        return None
    return value
