"""Keep the status webhook's token out of web-server and request logs.

The webhook can carry its token in the URL path (``status/<alias>/<token>/``),
and the path is what access logs print: runserver's ``django.server``,
``django.request`` (4xx/5xx), gunicorn's ``gunicorn.access`` and uvicorn's
``uvicorn.access``. The app installs :class:`WebhookTokenFilter` on those
loggers when Django starts (``AppConfig.ready``), so no ``LOGGING`` change is
needed; it replaces every configured webhook token in a record's text by
``***``. Logs a web server writes by itself (nginx, a gunicorn access log
file configured outside Python logging) are outside Django's reach: use the
basic-auth form of the webhook there (see the status pages guide).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from .redaction import MASK
from .shared_state.registry import on_reset

#: Loggers whose records carry request paths.
LOGGERS = ("django.request", "django.server", "gunicorn.access", "uvicorn.access")
_lock = threading.Lock()
_tokens: tuple[str, ...] | None = None


def configured_tokens() -> tuple[str, ...]:
    """Every router's ``status_webhook_token`` as written in settings (read
    once, again after a settings change); nothing if settings are broken."""
    global _tokens
    known = _tokens
    if known is not None:
        return known
    from .config import load_mailer_table, router_options

    found: set[str] = set()
    try:
        for _, options in router_options(load_mailer_table()):
            token = options.get("status_webhook_token") if isinstance(options, Mapping) else None
            if isinstance(token, str) and token:
                found.add(token)
    except Exception:  # broken settings are reported by the checks, not here
        return ()
    with _lock:
        _tokens = tuple(sorted(found, key=len, reverse=True))
        return _tokens


class WebhookTokenFilter(logging.Filter):
    """Masks configured webhook tokens in a record's message (never drops it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        tokens = configured_tokens()
        if not tokens:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is the handler's to report
            return True
        masked = text
        for token in tokens:
            masked = masked.replace(token, MASK)
        if masked != text:
            record.msg, record.args = masked, ()
        return True


def install() -> None:
    """Add the filter to the request-logging loggers (once)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, WebhookTokenFilter) for f in logger.filters):
            logger.addFilter(WebhookTokenFilter())


def _forget() -> None:
    global _tokens
    with _lock:
        _tokens = None


on_reset("mailrouter.webhook_logging", _forget)
