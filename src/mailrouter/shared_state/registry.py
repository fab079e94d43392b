"""Per-process state that belongs to one configuration, reset in one place.

Modules keep caches built from settings (validated routers, outbox options,
health stores, rate storages, webhook tokens). Each registers how to forget
its cache with :func:`on_reset`; :func:`reset` forgets them all, and runs on
every change of a setting in ``WATCHED_SETTINGS`` (Django's
``setting_changed``: ``override_settings`` in tests) — so an override of
``CACHES`` rebuilds the runtime that read it, not only the stores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.core.signals import setting_changed

#: The settings mailrouter's per-process state is built from. ``ANYMAIL_*``
#: settings count too (their secrets are redacted).
WATCHED_SETTINGS = frozenset({
    "CACHES", "MAILERS", "MAILROUTER", "EMAIL_BACKEND", "EMAIL_HOST_PASSWORD", "ANYMAIL",
})

Reset = Callable[[], None]
_resets: dict[str, Reset] = {}
_lock = threading.Lock()


def on_reset(name: str, forget: Reset) -> Reset:
    """Register ``forget`` (under a unique ``name``: registering again replaces
    it, so reloading a module does not add a second one)."""
    with _lock:
        _resets[name] = forget
    return forget


def remove(name: str) -> None:
    """Unregister the reset registered under ``name`` (if any)."""
    with _lock:
        _resets.pop(name, None)


def reset() -> None:
    """Forget every registered per-process state (tests, settings changes)."""
    with _lock:
        forgets = list(_resets.values())
    for forget in forgets:
        forget()


def watched(setting: str) -> bool:
    return setting in WATCHED_SETTINGS or setting.startswith("ANYMAIL")


def _on_setting_changed(*, setting: str, **_: Any) -> None:
    if watched(setting):
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="mailrouter.shared_state")
