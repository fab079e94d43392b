"""Check that a mailer can be reached, and where cheap, that it takes our
credentials, without sending mail.

Opens and closes the leaf's connection the way a send would (SMTP: connect,
TLS, and authentication when a username is configured), then asks what an
open() does not: an Anymail HTTP backend only creates a session, so the ESP is
asked a cheap authenticated read where it has one (Mailgun: the sending
domain, ``GET /v3/domains/<domain>``; Postmark: ``GET /server``), else its API
host is reached with a ``HEAD`` request; a boto3 backend (Anymail's Amazon
SES) is asked for the account (credentials, and whether it may send at all).

The result says what was proven: ``authenticated`` (the mailer accepted our
credentials), ``reachable`` (it answered; credentials not checked) or
``opened`` (the backend opened without talking to anything checkable).
Used by ``manage.py mailrouter probe``; usable from a health endpoint too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import MailerTable, RouterConfig
from .leafkinds import AUTHENTICATED, OPENED, REACHABLE, ProbeFailed, Stage, kind_for
from .leaves import apply_timeout, build_mailer
from .outcomes import Outcome
from .report import describe_error

__all__ = ["AUTHENTICATED", "OPENED", "REACHABLE", "ProbeFailed", "ProbeResult", "probe_mailer"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    alias: str
    ok: bool
    seconds: float
    #: What was checked beyond opening the connection (success only; redacted).
    detail: str = ""
    #: How the failure would count for a send (failure only).
    outcome: Outcome | None = None
    error_type: str | None = None
    #: Redacted error text (failure only).
    error: str | None = None
    #: What a success proved: ``authenticated``, ``reachable`` or ``opened``.
    proven: str | None = None


def probe_mailer(
    alias: str,
    table: MailerTable,
    config: RouterConfig,
    redact: Callable[[str], str],
    *,
    timeout: float | None = None,
) -> ProbeResult:
    """Open and close ``alias``'s connection and report the result; never raises
    for the mailer's own failures (they are the result)."""
    started = time.perf_counter()
    try:
        backend = build_mailer(alias, table)
        apply_timeout(backend, alias, config)
        if timeout is not None and hasattr(backend, "timeout"):
            backend.timeout = timeout
        try:
            backend.open()
            proven, detail = _check(backend, timeout or config.timeout)
        finally:
            backend.close()
    except Exception as error:
        try:
            outcome = Outcome(config.classifier(error, Stage.CONNECT))
        except Exception:
            outcome = Outcome.NOT_SENT
        return ProbeResult(
            alias,
            ok=False,
            seconds=time.perf_counter() - started,
            outcome=outcome,
            error_type=type(error).__name__,
            error=redact(describe_error(error)),
        )
    return ProbeResult(
        alias, ok=True, seconds=time.perf_counter() - started, detail=redact(detail),
        proven=proven,
    )


def _check(backend: Any, timeout: float | None) -> tuple[str, str]:
    """(what was proven, detail) for an opened backend; raises ProbeFailed
    when the mailer answered that it will not send. How to ask is the
    leaf's kind's knowledge (``mailrouter.leafkinds``)."""
    return kind_for(backend).probe(backend, timeout)
