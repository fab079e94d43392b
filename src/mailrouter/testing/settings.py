"""Configure the router the way a project does, in either settings style.

- ``"mailers"`` (Django 6.1+): ``MAILERS`` with ``"default"`` = the router,
  plus the leaf mailers;
- ``"legacy"`` (every version): ``EMAIL_BACKEND`` = the router and
  ``MAILROUTER = {"MAILERS": ..., "OPTIONS": ...}``, and no ``MAILERS`` at all;
- ``"auto"``: ``"mailers"`` where Django has it, else ``"legacy"``.

``mail_settings()`` returns the setting values (for ``settings.configure()``
in scripts); ``router_settings()`` applies them to a running test.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..compat import HAS_MAILERS, uses_mailers_setting

ROUTER = "mailrouter.backend.RouterBackend"
STYLES = ("mailers", "legacy") if HAS_MAILERS else ("legacy",)


def resolve_style(style: str) -> str:
    """``"auto"`` → the style this Django version supports best."""
    if style == "auto":
        return "mailers" if HAS_MAILERS else "legacy"
    if style not in ("mailers", "legacy"):
        raise ValueError(f"unknown settings style {style!r} (expected mailers, legacy or auto)")
    if style == "mailers" and not HAS_MAILERS:
        raise ValueError("the MAILERS setting needs Django 6.1 or later")
    return style


def mail_settings(
    mailers: Mapping[str, Any], options: Mapping[str, Any], *, style: str = "auto"
) -> dict[str, Any]:
    """The settings that make the router (with ``options``) the default mailer
    and ``mailers`` the mailers it routes to."""
    if resolve_style(style) == "mailers":
        return {"MAILERS": {"default": {"BACKEND": ROUTER, "OPTIONS": dict(options)}, **mailers}}
    return {
        "EMAIL_BACKEND": ROUTER,
        "MAILROUTER": {"MAILERS": dict(mailers), "OPTIONS": dict(options)},
    }


@contextmanager
def router_settings(
    mailers: Mapping[str, Any], options: Mapping[str, Any], *, style: str = "auto", **extra: Any
) -> Iterator[None]:
    """Override the settings of a running test (or script) with ``mail_settings()``
    and any ``extra`` settings, restored on exit."""
    from django.conf import settings
    from django.test.utils import override_settings

    values = mail_settings(mailers, options, style=style)
    with override_settings(**values, **extra):
        if "MAILERS" not in values and hasattr(settings, "MAILERS"):
            delattr(settings, "MAILERS")
        yield


def default_mailer() -> Any:
    """The default mailer (the router, once configured), obtained exactly as
    Django's own send path does on this version and settings style."""
    from django.core import mail

    if uses_mailers_setting():
        return mail.mailers["default"]  # type: ignore[attr-defined,unused-ignore]
    return mail.get_connection()
