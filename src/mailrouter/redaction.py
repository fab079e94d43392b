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
from urllib.parse import parse_qsl, unquote, urlsplit

from .compat import is_overridden

MASK = "***"
_SECRET_KEY_PARTS = ("password", "passwd", "secret", "key", "token", "auth", "credential")
_MIN_SECRET_LENGTH = 4
#: Shorter query values (``format=json``) are masked inside URLs by the
#: pattern below, not replaced wherever they appear in a text.
_MIN_URL_SECRET_LENGTH = 8

_PATTERNS = (
    # scheme://userinfo@host: the whole userinfo (a bare token is a secret too)
    re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://)[^/?#@\s]+(?=@)", re.I),
    # every query value (?sig=..., &key=..., &auth=...): any may be a credential
    re.compile(r"(?P<keep>[?&][^=&?#\s\"'/]+=)[^&#\s\"'<>]+"),
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
    """Secret-looking string values in an OPTIONS dict (searched recursively,
    lists too), and the query values and userinfo of every URL in it."""
    found: set[str] = set()
    for key, value in options.items():
        found |= _secrets_of(value, looks_secret(str(key)))
    return found


def _secrets_of(value: Any, secret_key: bool) -> set[str]:
    if isinstance(value, Mapping):
        return secrets_in(value)
    if isinstance(value, (list, tuple)):
        return set().union(*(_secrets_of(item, secret_key) for item in value))
    if not isinstance(value, str):
        return set()
    found = url_secrets(value)
    if secret_key and len(value) >= _MIN_SECRET_LENGTH:
        found.add(value)
    return found


def url_secrets(text: str) -> set[str]:
    """The query values and userinfo parts of ``text`` if it is a URL: known
    secrets, so they are masked even where the URL appears cut or re-joined
    (an HTTP library's "url: /v3/?key=..." or a host:port in an error)."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return set()
    if not parts.scheme or not parts.netloc:
        return set()
    values = [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        values += [userinfo, *userinfo.split(":", 1), unquote(userinfo)]
    return {v for v in values if len(v) >= _MIN_URL_SECRET_LENGTH}


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
    esp_settings = getattr(settings, "ANYMAIL", None)
    if isinstance(esp_settings, Mapping):
        found |= secrets_in(esp_settings)
    for name in dir(settings):
        if name.startswith("ANYMAIL_") and looks_secret(name):
            value = getattr(settings, name, None)
            if isinstance(value, str):
                found.add(value)
    return found
