"""Argument parsing shared by the ``mailrouter`` command and its outbox subcommands."""

from __future__ import annotations

import re

from django.core.management.base import CommandError

#: Exit code of a usage or configuration error (bad argument, unknown alias).
EXIT_USAGE = 2

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(option: str, text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` → seconds; anything
    else (zero, negative, no number) is a usage error naming ``option``."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise CommandError(
            f"{option} {text!r}: expected a positive duration such as 90s, 15m, 2h or 30d",
            returncode=EXIT_USAGE,
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]
