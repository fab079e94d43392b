"""Every difference between the supported Django versions (5.2, 6.0, 6.1+), in one place.

Django 6.1 added the ``MAILERS`` setting (``django.core.mail.mailers``), passes
``alias`` to every backend it builds (and ``_ignore_unknown_kwargs`` to the
default one), has ``InvalidMailer`` for mailer configuration errors, gave
``BaseEmailBackend`` a ``__getattr__``, warns when deprecated ``EMAIL_*``
settings are read, and keeps a message's deprecated ``connection`` in
``_connection`` behind a warning property.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, cast

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

#: Django 6.1+: the ``MAILERS`` setting exists, and Django passes ``alias`` to
#: every backend it creates from it.
HAS_MAILERS = django.VERSION >= (6, 1)
BACKENDS_TAKE_ALIAS = HAS_MAILERS

if TYPE_CHECKING:
    InvalidMailer = ImproperlyConfigured
else:
    try:  # Django 6.1+: mailer configuration errors have their own class.
        from django.core.mail import InvalidMailer
    except ImportError:  # Django < 6.1
        InvalidMailer = ImproperlyConfigured

#: Django 6.1's ``BaseEmailBackend.__getattr__`` (None before 6.1).
BASE_BACKEND_GETATTR = BaseEmailBackend.__dict__.get("__getattr__")


def drop_ignored_options(options: dict[str, Any]) -> None:
    """Remove, in place, the keyword arguments Django 6.1 asks a backend to
    ignore: when it builds the default mailer for a legacy
    ``get_connection(**kwargs)`` call, it passes ``_ignore_unknown_kwargs``
    naming them (they are not router options)."""
    for name in options.pop("_ignore_unknown_kwargs", None) or ():
        options.pop(name, None)


def ignore_unknown_kwargs(
    backend: type, options: dict[str, Any], known: Collection[str]
) -> dict[str, Any]:
    """``options`` without the keyword arguments ``backend`` does not know,
    for a backend built without an alias (``get_connection(**kwargs)``, the
    pre-6.1 path), which ignores them as Django's own backends do: Django 6.1
    with a ``RemovedInDjango2028Warning`` (it will raise ``TypeError`` in
    Django 2028), 5.2 and 6.0 silently (their ``BaseEmailBackend`` accepts any
    ``**kwargs``). ``username``/``password`` of None are what ``send_mail()``
    passes when no credentials were given: never warned about."""
    unknown = [
        key for key in options
        if key not in known and not (key in ("username", "password") and options[key] is None)
    ]
    if unknown and HAS_MAILERS:
        from django.utils.deprecation import (  # type: ignore[attr-defined,unused-ignore]
            RemovedInDjango2028Warning,
        )

        names = ", ".join(repr(key) for key in unknown)
        warnings.warn(
            f"{backend.__module__}.{backend.__qualname__}.__init__() does not support "
            f"{names}. In Django 2028, BaseEmailBackend will raise a TypeError for "
            "unknown keyword arguments.",
            RemovedInDjango2028Warning,
            stacklevel=3,
        )
    return {key: value for key, value in options.items() if key in known}


def legacy_connection(message: EmailMessage) -> Any:
    """The message's deprecated ``connection`` (or None), without triggering
    Django 6.1's deprecation warning: 6.1 stores it as ``_connection`` behind a
    warning property, earlier versions as the plain attribute ``connection``."""
    state = message.__dict__
    if "_connection" in state:
        return state["_connection"]
    return state.get("connection")


def uses_mailers_setting() -> bool:
    """True when leaf mailers come from Django 6.1's ``MAILERS`` setting."""
    return HAS_MAILERS and hasattr(settings, "MAILERS")


def is_overridden(name: str) -> bool:
    """Whether settings set ``name``, without reading it (Django 6.1 warns on
    reads of its deprecated email settings)."""
    return bool(cast(Any, settings).is_overridden(name))


def mailers_setting() -> Any:
    """The ``MAILERS`` setting (call only when ``uses_mailers_setting()``)."""
    return getattr(settings, "MAILERS")  # noqa: B009 (not in older stubs)


def mailer_from_mailers_setting(alias: str) -> BaseEmailBackend:
    """Mailer ``alias`` built by Django 6.1 itself, exactly as ``send(using=alias)`` would."""
    from django.core.mail import mailers  # type: ignore[attr-defined,unused-ignore]

    backend: BaseEmailBackend = mailers[alias]
    return backend


#: Django 6.0+ builds messages with the modern email API (parsed headers).
MODERN_EMAIL_API = django.VERSION >= (6, 0)
#: Address headers a mailer reads (Bcc is not in the built message).
_ADDRESS_HEADERS = ("From", "To", "Cc", "Reply-To")
#: Django sends to local mailboxes ("webmaster"): not a defect for it (#15042).
_ALLOWED_DEFECTS = frozenset({"addr-spec local part with no domain"})


def check_addresses(message: EmailMessage, built: Any) -> None:
    """Raise ``ValueError`` for an address Django's SMTP backend refuses at
    send time, before any I/O; ``built`` is ``message.message()``.

    Django 6.0+ parsed each address header once while building the message
    and recorded its defects: they are read. Older Django built plain-text
    headers: its SMTP backend's own ``sanitize_address`` judges each address.
    """
    if MODERN_EMAIL_API:
        for name in _ADDRESS_HEADERS:
            header = built.get(name)
            defects = {str(defect) for defect in getattr(header, "defects", ())}
            defects -= _ALLOWED_DEFECTS
            if defects:
                raise ValueError(
                    f"Invalid address in {name} {str(header)!r}: {'; '.join(sorted(defects))}"
                )
        return
    from django.core.mail.message import sanitize_address

    encoding = message.encoding or settings.DEFAULT_CHARSET
    for address in (message.from_email, *message.recipients()):
        sanitize_address(address, encoding)
