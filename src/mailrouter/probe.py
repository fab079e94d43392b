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
from urllib.parse import urlsplit, urlunsplit

from .classify import Stage
from .config import MailerTable, RouterConfig
from .errors import MailRouterError
from .leaves import apply_timeout, build_mailer
from .outcomes import Outcome
from .report import describe_error


class ProbeFailed(MailRouterError):
    """The mailer answered, and said it will not send."""


#: ``ProbeResult.proven`` values, weakest first.
OPENED = "opened"
REACHABLE = "reachable"
AUTHENTICATED = "authenticated"


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
    when the mailer answered that it will not send."""
    aws = _aws_account(backend)
    if aws:
        return AUTHENTICATED, aws
    api_url = getattr(backend, "api_url", None)
    session = getattr(backend, "session", None)
    if isinstance(api_url, str) and session is not None:
        base = configured_url(api_url)
        esp = getattr(backend, "esp_name", "")
        check = _ESP_CHECKS.get(esp)
        if check is not None:
            return AUTHENTICATED, check(backend, session, base, timeout or 30)
        return REACHABLE, _http_reachability(session, base, timeout or 30)
    if getattr(backend, "connection", None) is not None:  # SMTP
        if getattr(backend, "username", None):
            return AUTHENTICATED, "SMTP server accepted the login"
        return REACHABLE, "SMTP server greeted us (no login configured)"
    return OPENED, ""


def configured_url(api_url: str) -> str:
    """``api_url`` as configured: Anymail appends ``/`` to it, which lands
    after a query string (``...?key=x/``) when the URL has one."""
    parts = urlsplit(api_url)
    if parts.query.endswith("/"):
        return urlunsplit(parts._replace(query=parts.query[:-1]))
    return api_url


def endpoint(base: str, relative: str) -> str:
    """``relative`` under ``base``'s path, keeping ``base``'s query string."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + "/" + relative
    return urlunsplit(parts._replace(path=path))


def _http_reachability(session: Any, url: str, timeout: float) -> str:
    """For HTTP API backends without a known credentials check: any answer
    short of a server error means DNS, TCP and TLS work."""
    response = session.request("HEAD", url, timeout=timeout)
    if response.status_code >= 500:
        raise ProbeFailed(f"API at {url} answered HTTP {response.status_code}")
    return f"API at {url} answered HTTP {response.status_code} (credentials not checked)"


def _answer(esp: str, what: str, url: str, response: Any) -> Any:
    """The JSON of a 200 answer; ProbeFailed for anything else."""
    status = response.status_code
    if status in (401, 403):
        raise ProbeFailed(f"{esp} refused the credentials ({what}: HTTP {status})")
    if status != 200:
        raise ProbeFailed(f"{esp} answered HTTP {status} to {what} at {url}")
    try:
        return response.json()
    except ValueError:
        raise ProbeFailed(f"{esp} answered {what} with a body that is not JSON") from None


def _mailgun(backend: Any, session: Any, base: str, timeout: float) -> str:
    domain = getattr(backend, "sender_domain", None)
    url = endpoint(base, f"domains/{domain}" if domain else "domains")
    response = session.request(
        "GET", url, auth=("api", backend.api_key), timeout=timeout,
        params=None if domain else {"limit": 1},
    )
    data = _answer("Mailgun", f"domain {domain}" if domain else "the domain list", url, response)
    if not domain:
        return "Mailgun accepted the API key (domain list read)"
    state = (data.get("domain") or {}).get("state", "unknown") if isinstance(data, dict) else "?"
    return f"Mailgun accepted the API key; domain {domain} is {state}"


def _postmark(backend: Any, session: Any, base: str, timeout: float) -> str:
    url = endpoint(base, "server")
    response = session.request(
        "GET", url, timeout=timeout,
        headers={"Accept": "application/json", "X-Postmark-Server-Token": backend.server_token},
    )
    data = _answer("Postmark", "the server read", url, response)
    name = data.get("Name", "?") if isinstance(data, dict) else "?"
    return f"Postmark accepted the server token (server {name!r})"


#: Anymail ``esp_name`` → its cheap authenticated read.
_ESP_CHECKS: dict[str, Callable[[Any, Any, str, float], str]] = {
    "Mailgun": _mailgun,
    "Postmark": _postmark,
}


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
