"""Check that a mailer can be reached, without sending mail.

Opens and closes the leaf's connection the way a send would (SMTP: connect,
TLS, authentication), then asks what an open() does not: an Anymail HTTP
backend only creates a session, so its API host is reached with a ``HEAD``
request; a boto3 backend (Anymail's Amazon SES) only creates a client, so SES
is asked for the account (credentials, and whether it may send at all).
Used by ``manage.py mailrouter probe``; usable from a health endpoint too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .classify import Stage
from .config import MailerTable, RouterConfig
from .errors import MailRouterError
from .leaves import apply_timeout, build_mailer
from .outcomes import Outcome
from .report import describe_error


class ProbeFailed(MailRouterError):
    """The mailer answered, and said it will not send."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    alias: str
    ok: bool
    seconds: float
    #: What was checked beyond opening the connection (success only).
    detail: str = ""
    #: How the failure would count for a send (failure only).
    outcome: Outcome | None = None
    error_type: str | None = None
    #: Redacted error text (failure only).
    error: str | None = None


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
            detail = _http_reachability(backend, timeout or config.timeout) or _aws_account(
                backend
            )
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
    return ProbeResult(alias, ok=True, seconds=time.perf_counter() - started, detail=detail)


def _http_reachability(backend: Any, timeout: float | None) -> str:
    """For HTTP API backends (Anymail): any HTTP answer from the API URL means
    DNS, TCP and TLS work."""
    api_url = getattr(backend, "api_url", None)
    session = getattr(backend, "session", None)
    if not isinstance(api_url, str) or session is None:
        return ""
    response = session.request("HEAD", api_url, timeout=timeout or 30)
    return f"API at {api_url} answered HTTP {response.status_code}"


def _aws_account(backend: Any) -> str:
    """For boto3 backends (Anymail's Amazon SES): SES GetAccount."""
    client = getattr(backend, "client", None)
    if client is None or not hasattr(client, "get_account"):
        return ""
    account = client.get_account()
    quota = account.get("SendQuota") or {}
    if account.get("SendingEnabled") is False:
        raise ProbeFailed(
            f"SES reports sending disabled for this account "
            f"(enforcement status {account.get('EnforcementStatus', 'unknown')})"
        )
    return (
        f"SES account: sending enabled, {quota.get('SentLast24Hours', 0):.0f} of "
        f"{quota.get('Max24HourSend', 0):.0f} messages sent in the last 24 h, "
        f"at most {quota.get('MaxSendRate', 0):g}/s"
    )
