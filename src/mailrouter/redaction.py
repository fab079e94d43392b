"""Keep secrets out of everything the router writes.

Secrets are collected from the mailers' OPTIONS (values of keys that look
secret) and from Django's email settings, and replaced wherever they appear;
well-known shapes (URL credentials, ``key=value`` pairs, auth headers) are
masked even when the value was never configured here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .compat import is_overridden

MASK = "***"
_SECRET_KEY_PARTS = ("password", "passwd", "secret", "key", "token", "auth", "credential")
_MIN_SECRET_LENGTH = 4

_PATTERNS = (
    # scheme://user:password@host
    re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+(?=@)", re.I),
    # api_key=..., token: ..., password="..."
    re.compile(
        r"(?P<keep>\b[\w-]*(?:password|passwd|secret|api[_-]?key|token)[\w-]*"
        r"[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;}]+",
        re.I,
    ),
    # Authorization: Basic xxx / Bearer xxx
    re.compile(r"(?P<keep>\b(?:basic|bearer)\s+)[A-Za-z0-9+/=._-]{8,}", re.I),
)


def _keep_and_mask(match: re.Match[str]) -> str:
    return match.group("keep") + MASK


def looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in _SECRET_KEY_PARTS)


def secrets_in(options: Mapping[str, Any]) -> set[str]:
    """Secret-looking string values in an OPTIONS dict (searched recursively)."""
    found: set[str] = set()
    for key, value in options.items():
        if isinstance(value, Mapping):
            found |= secrets_in(value)
        elif isinstance(value, str) and looks_secret(str(key)) and len(value) >= _MIN_SECRET_LENGTH:
            found.add(value)
    return found


class Redactor:
    """Replaces known secret values and secret-shaped substrings with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted(
            {s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True
        )
        self._known = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(MASK, text)
        for pattern in _PATTERNS:
            text = pattern.sub(_keep_and_mask, text)
        return text


def settings_secrets() -> set[str]:
    """Secrets from Django's own email and Anymail settings."""
    from django.conf import settings

    found: set[str] = set()
    # Read only when set: Django 6.1 warns on reading deprecated EMAIL_* settings.
    password = settings.EMAIL_HOST_PASSWORD if is_overridden("EMAIL_HOST_PASSWORD") else ""
    if isinstance(password, str) and len(password) >= _MIN_SECRET_LENGTH:
        found.add(password)
    anymail = getattr(settings, "ANYMAIL", None)
    if isinstance(anymail, Mapping):
        found |= secrets_in(anymail)
    for name in dir(settings):
        if name.startswith("ANYMAIL_") and looks_secret(name):
            value = getattr(settings, name, None)
            if isinstance(value, str):
                found.add(value)
    return found
