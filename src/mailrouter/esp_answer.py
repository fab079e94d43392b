"""Judge an ESP's answer recipient by recipient.

An ESP can answer "200 OK" and still have refused some or all recipients:
Amazon SES's bulk send reports a status per destination, a Postmark batch an
``ErrorCode`` per message. Anymail records the per-recipient result in
``message.anymail_status.recipients`` (and sometimes raises with the raw answer
instead). The rule, the same as for SMTP partial refusals:

- every recipient refused → the outcome their errors imply (the most
  cautious one: uncertain, then not sent, then incompatible, then rejected);
- some refused → accepted, with a note naming them and why;
- none refused → accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .classify import POSTMARK_ERROR_CODES
from .outcomes import Outcome

#: Amazon SES ``BulkEmailEntryResult.Status`` values (SES v2 API reference).
#: Anything else that is not SUCCESS: not sent.
SES_BULK_STATUSES: dict[str, Outcome] = {
    "SUCCESS": Outcome.ACCEPTED,
    "MESSAGE_REJECTED": Outcome.REJECTED,
    "INVALID_PARAMETER": Outcome.REJECTED,
    "MAIL_FROM_DOMAIN_NOT_VERIFIED": Outcome.INCOMPATIBLE,
    "TEMPLATE_NOT_FOUND": Outcome.INCOMPATIBLE,
    "ACCOUNT_THROTTLED": Outcome.NOT_SENT,
    "ACCOUNT_DAILY_QUOTA_EXCEEDED": Outcome.NOT_SENT,
    "ACCOUNT_SUSPENDED": Outcome.NOT_SENT,
    "ACCOUNT_SENDING_PAUSED": Outcome.NOT_SENT,
    "CONFIGURATION_SET_NOT_FOUND": Outcome.NOT_SENT,
    "CONFIGURATION_SET_SENDING_PAUSED": Outcome.NOT_SENT,
    "INVALID_SENDING_POOL_NAME": Outcome.NOT_SENT,
    "TRANSIENT_FAILURE": Outcome.NOT_SENT,
    "FAILED": Outcome.NOT_SENT,
}

#: Anymail's send-time recipient statuses. "unknown" means the ESP took the
#: message without a per-recipient report: it may be delivered, so it counts
#: as accepted (never resent).
_ANYMAIL_STATUSES: dict[str, Outcome] = {
    "queued": Outcome.ACCEPTED,
    "sent": Outcome.ACCEPTED,
    "scheduled": Outcome.ACCEPTED,
    "unknown": Outcome.ACCEPTED,
    "rejected": Outcome.REJECTED,
    "invalid": Outcome.REJECTED,
    "failed": Outcome.NOT_SENT,
}

#: When every recipient failed: the most cautious of their outcomes wins.
_PRECEDENCE = (Outcome.UNCERTAIN, Outcome.NOT_SENT, Outcome.INCOMPATIBLE, Outcome.REJECTED)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    #: Names the refused recipients (None if every recipient was accepted).
    note: str | None


@dataclass(frozen=True, slots=True)
class _Result:
    recipient: str
    outcome: Outcome
    detail: str


def combine(results: Iterable[_Result]) -> Verdict | None:
    results = list(results)
    if not results:
        return None
    refused = [r for r in results if r.outcome is not Outcome.ACCEPTED]
    if not refused:
        return Verdict(Outcome.ACCEPTED, None)
    names = ", ".join(f"{r.recipient} ({r.detail})" for r in refused)
    if len(refused) < len(results):
        return Verdict(Outcome.ACCEPTED, f"accepted, but not for: {names}")
    outcomes = {r.outcome for r in refused}
    outcome = next(o for o in _PRECEDENCE if o in outcomes)
    return Verdict(outcome, f"no recipient accepted: {names}")


def from_status(message: Any) -> Verdict | None:
    """The verdict recorded in ``message.anymail_status`` (None if there is none)."""
    status = getattr(message, "anymail_status", None)
    recipients = getattr(status, "recipients", None)
    if not isinstance(recipients, dict) or not recipients:
        return None
    ses_codes = _ses_bulk_codes(getattr(status, "esp_response", None))
    if ses_codes is not None and len(ses_codes) != len(recipients):
        ses_codes = None
    results = []
    for index, (address, recipient) in enumerate(recipients.items()):
        kind = str(getattr(recipient, "status", None))
        outcome = _ANYMAIL_STATUSES.get(kind, Outcome.UNCERTAIN)
        detail = kind
        if ses_codes is not None:
            code = ses_codes[index]
            outcome = SES_BULK_STATUSES.get(code, Outcome.NOT_SENT)
            detail = f"{kind}: {code}"
        results.append(_Result(str(address), outcome, detail))
    return combine(results)


def from_error(error: BaseException) -> Verdict | None:
    """The verdict in a successful HTTP answer that Anymail raised about
    (an Amazon SES bulk send where every destination failed alike, a Postmark
    batch with failed items). None if ``error`` carries no such answer."""
    response = getattr(error, "response", None)
    payload = getattr(error, "payload", None)
    codes = _ses_bulk_codes(response)
    if codes is not None:
        to = getattr(payload, "recipients", {}).get("to", [])
        names = _names(to, len(codes))
        return combine(
            _Result(name, SES_BULK_STATUSES.get(code, Outcome.NOT_SENT), code)
            for name, code in zip(names, codes, strict=True)
        )
    items = _postmark_items(response)
    if items is not None:
        names = _names(getattr(payload, "to_emails", []), len(items))
        return combine(
            _Result(name, *_postmark_item(item)) for name, item in zip(names, items, strict=True)
        )
    return None


def _names(addresses: Any, count: int) -> list[str]:
    specs = [str(getattr(a, "addr_spec", a)) for a in addresses or []]
    if len(specs) == count:
        return specs
    return [f"item {index + 1}" for index in range(count)]


def _ses_bulk_codes(response: Any) -> list[str] | None:
    if not isinstance(response, dict):
        return None
    results = response.get("BulkEmailEntryResults")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        return None
    return [str(r.get("Status")) for r in results]


def _postmark_items(response: Any) -> list[dict[str, Any]] | None:
    """A Postmark 2xx answer's items (one per message of a batch)."""
    status = getattr(response, "status_code", None)
    if not isinstance(status, int) or not 200 <= status < 300:
        return None
    try:
        body = response.json()
    except Exception:
        return None
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) and "ErrorCode" in i for i in items):
        return None
    return items


def _postmark_item(item: dict[str, Any]) -> tuple[Outcome, str]:
    code, text = item.get("ErrorCode"), str(item.get("Message", ""))
    if code == 0:
        return Outcome.ACCEPTED, "ok"
    detail = f"ErrorCode {code}: {text}"[:200]
    if code == 300 and "sender signature" in text.lower():
        return Outcome.INCOMPATIBLE, detail
    if code in (300, 406):
        return Outcome.REJECTED, detail
    if isinstance(code, int) and code in POSTMARK_ERROR_CODES:
        return POSTMARK_ERROR_CODES[code], detail
    # A documented per-item failure: this item was not sent.
    return Outcome.NOT_SENT, detail
