"""The default failure classifier: exception + stage → Outcome.

A classifier is any callable ``f(error, stage) -> Outcome``. Set the router
option ``classifier`` to a dotted path to replace this one; a custom classifier
usually handles its own cases and delegates the rest to ``default_classifier``.

The decision depends on *when* the error happened, not just its type: a
dropped connection before the message body was sent means "not sent", the same
exception after the body was sent means the mailer may have the message.
"""

from __future__ import annotations

import enum
import smtplib
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .outcomes import MessageStatus, Outcome


class Stage(enum.StrEnum):
    """How far an attempt got before the error."""

    #: Building the message or API request (Anymail: ``pre_send``, payload);
    #: nothing has left the process.
    PREPARE = "prepare"
    #: Opening the connection: connect, TLS, greeting, authentication.
    CONNECT = "connect"
    #: Sending, before the complete message body (or HTTP request) was transmitted.
    ENVELOPE = "envelope"
    #: The complete body (or HTTP request) was transmitted; waiting for the
    #: reply, or judging the reply that came.
    BODY_SENT = "body_sent"
    #: Inside an HTTP request whose connection could not be watched: the
    #: request may have left.
    REQUEST = "request"
    #: The mailer answered and its per-recipient verdict is recorded (Anymail's
    #: ``anymail_status``); an error now comes from code after the answer,
    #: such as a ``post_send`` receiver.
    ANSWERED = "answered"
    #: Sending through a backend that does not tell how far it got.
    UNKNOWN = "unknown"


#: Stages at which the message may already be with the mailer: only the
#: mailer's own answer (an HTTP status, an error code) can prove otherwise.
MAY_HAVE_LEFT = frozenset({Stage.BODY_SENT, Stage.REQUEST, Stage.ANSWERED})


Classifier = Callable[[BaseException, Stage], Outcome]

_REJECTING_HTTP_STATUSES = frozenset({400, 422})
#: Bad gateway and gateway timeout.
_GATEWAY_STATUSES = frozenset({502, 504})

#: Postmark answers HTTP 422 for problems with the message and with the account
#: alike; its ``ErrorCode`` tells them apart (postmarkapp.com/developer/api/overview).
#: Codes not listed keep the HTTP status's outcome (422: rejected). Recipient
#: problems (300 on To/Cc/Bcc, 406 inactive) reach us as AnymailRecipientsRefused.
POSTMARK_ERROR_CODES: dict[int, Outcome] = {
    100: Outcome.NOT_SENT,  # maintenance
    405: Outcome.NOT_SENT,  # not allowed to send (e.g. out of credits)
    412: Outcome.NOT_SENT,  # account pending approval
    413: Outcome.NOT_SENT,  # account may not send
    400: Outcome.INCOMPATIBLE,  # no sender signature for this From at this mailer
    401: Outcome.INCOMPATIBLE,  # sender signature not confirmed
    402: Outcome.INCOMPATIBLE,  # invalid JSON
    403: Outcome.INCOMPATIBLE,  # incompatible JSON
    409: Outcome.INCOMPATIBLE,  # JSON required
    410: Outcome.INCOMPATIBLE,  # too many batch messages
    411: Outcome.INCOMPATIBLE,  # forbidden attachment type (another mailer may allow it)
}


#: Amazon SES error codes (boto3's ``response["Error"]["Code"]``). The HTTP
#: status alone misleads: SES answers 400 for throttling, an exhausted quota and
#: a paused account as well as for a bad message.
SES_ERROR_CODES: dict[str, Outcome] = {
    "TooManyRequestsException": Outcome.NOT_SENT,
    "Throttling": Outcome.NOT_SENT,  # SES v1: "Maximum sending rate exceeded"
    "ThrottlingException": Outcome.NOT_SENT,
    "LimitExceededException": Outcome.NOT_SENT,  # sending quota
    "AccountSuspendedException": Outcome.NOT_SENT,
    "SendingPausedException": Outcome.NOT_SENT,
    "NotFoundException": Outcome.NOT_SENT,  # e.g. a configuration set this mailer lacks
    "AccessDeniedException": Outcome.NOT_SENT,
    "UnrecognizedClientException": Outcome.NOT_SENT,
    "InvalidClientTokenId": Outcome.NOT_SENT,
    "SignatureDoesNotMatch": Outcome.NOT_SENT,
    "ExpiredTokenException": Outcome.NOT_SENT,
    "MailFromDomainNotVerifiedException": Outcome.INCOMPATIBLE,
    "MessageRejected": Outcome.REJECTED,
    "BadRequestException": Outcome.REJECTED,
}


def classify_http_status(status: int) -> Outcome:
    """Outcome of an ESP API call that answered with HTTP ``status``.

    Only called for errors: a 2xx here means the ESP answered success but the
    response could not be understood, so the ESP probably has the message.
    """
    if 200 <= status < 300:
        return Outcome.UNCERTAIN
    if status == 413:
        # Payload too large: size limits differ between mailers.
        return Outcome.INCOMPATIBLE
    if status in _REJECTING_HTTP_STATUSES:
        return Outcome.REJECTED
    if status in _GATEWAY_STATUSES:
        # A proxy in front of the ESP gave up waiting: the ESP behind it may
        # have stored the message (no ESP we support documents otherwise).
        return Outcome.UNCERTAIN
    # 401/403 (credentials), 404 (wrong domain/endpoint), 408, 429, 5xx:
    # this mailer did not take the message, another one may.
    return Outcome.NOT_SENT


def _smtp_code_outcome(code: int, *, permanent: Outcome) -> Outcome:
    if 500 <= code < 600:
        return permanent
    return Outcome.NOT_SENT


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """The error, its causes/contexts, and exceptions wrapped in args/reason.

    requests wraps urllib3's errors in ``args[0]`` (MaxRetryError) and
    MaxRetryError keeps the real one in ``reason``, not in ``__cause__``.
    """
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                pending.append(linked)
        pending.extend(
            arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)
        )


def _names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def classify_transport_chain(error: BaseException) -> Outcome | None:
    """Classify HTTP client errors (requests/urllib3) by their cause chain.

    Connect-phase failures mean nothing was sent; a read timeout or a
    connection dropped after the request means the ESP may have the message.
    """
    verdict: Outcome | None = None
    for link in error_chain(error):
        names = _names(link)
        if names & {
            "ConnectTimeout",
            "ConnectTimeoutError",
            "NewConnectionError",
            "NameResolutionError",
            "SSLError",
            "ProxyError",
            "InvalidURL",
            "MissingSchema",
            "InvalidSchema",
            "LocationParseError",
        }:
            return Outcome.NOT_SENT
        if isinstance(link, (ConnectionRefusedError, socket.gaierror)):
            return Outcome.NOT_SENT
        if names & {
            "ReadTimeout",
            "ReadTimeoutError",
            "ProtocolError",
            "RemoteDisconnected",
            "ChunkedEncodingError",
            "IncompleteRead",
        }:
            verdict = Outcome.UNCERTAIN
    return verdict


#: Errors that prove the request never left: it could not even be addressed
#: or connected. (A TLS error is not one of them: it may come while reading.)
_NEVER_LEFT = frozenset(
    {
        "ConnectTimeout",
        "ConnectTimeoutError",
        "NewConnectionError",
        "NameResolutionError",
        "InvalidURL",
        "MissingSchema",
        "InvalidSchema",
        "LocationParseError",
        "EndpointConnectionError",
    }
)


def _classify_after_sending(error: BaseException, stage: Stage) -> Outcome:
    """Once the request or body may have left, only the mailer's own answer
    (an HTTP status, an ESP error code) decides; anything else is uncertain."""
    answer = _classify_answer(error)
    if answer is not None:
        return answer
    if stage is Stage.REQUEST:
        for link in error_chain(error):
            if _names(link) & _NEVER_LEFT or isinstance(
                link, (ConnectionRefusedError, socket.gaierror)
            ):
                return Outcome.NOT_SENT
    return Outcome.UNCERTAIN


def _classify_answer(error: BaseException) -> Outcome | None:
    """The outcome an ESP's answer carried by ``error`` implies, if any."""
    anymail_errors = sys.modules.get("anymail.exceptions")
    if anymail_errors is not None and isinstance(
        error, (anymail_errors.AnymailRecipientsRefused, anymail_errors.AnymailInvalidAddress)
    ):
        return Outcome.REJECTED
    status = getattr(error, "status_code", None)
    if not isinstance(status, int):
        status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status, int) and not 200 <= status < 300:
        if status == 422 and getattr(error, "esp_name", None) == "Postmark":
            return _classify_postmark_422(error) or Outcome.REJECTED
        return classify_http_status(status)
    aws = _classify_aws_response(getattr(error, "response", None))
    if aws is not None and aws is not Outcome.UNCERTAIN:
        return aws
    return None


def _classify_anymail(error: BaseException) -> Outcome | None:
    # An Anymail error can only exist once its module is loaded. Importing it
    # here instead would cost a process that never uses Anymail the import of
    # requests (a few hundred ms) on its first failed attempt: a stall exactly
    # when a mailer goes down and the fleet must learn it fast.
    anymail_errors = sys.modules.get("anymail.exceptions")
    if anymail_errors is None or not isinstance(error, anymail_errors.AnymailError):
        return None
    if isinstance(
        error, (anymail_errors.AnymailRecipientsRefused, anymail_errors.AnymailInvalidAddress)
    ):
        return Outcome.REJECTED
    if isinstance(
        error, (anymail_errors.AnymailUnsupportedFeature, anymail_errors.AnymailSerializationError)
    ):
        return Outcome.INCOMPATIBLE
    if isinstance(error, anymail_errors.AnymailConfigurationError):
        return Outcome.NOT_SENT
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        if status == 422 and getattr(error, "esp_name", None) == "Postmark":
            return _classify_postmark_422(error) or Outcome.REJECTED
        return classify_http_status(status)
    aws = _classify_aws_response(getattr(error, "response", None))
    if aws is not None:
        return aws
    return classify_transport_chain(error) or Outcome.UNCERTAIN


def _classify_aws_response(response: Any) -> Outcome | None:
    """An AWS API error as boto3 parses it (Anymail's Amazon SES backend keeps
    botocore's ``response`` dict on its AnymailAPIError)."""
    if not isinstance(response, dict):
        return None
    error = response.get("Error")
    if not isinstance(error, dict):
        error = {}
    code = error.get("Code")
    if code == "MessageRejected" and "not verified" in str(error.get("Message", "")).lower():
        # Sandbox or identity checks: "Email address is not verified": a
        # setting of this mailer, not a fault of the message.
        return Outcome.INCOMPATIBLE
    if isinstance(code, str) and code in SES_ERROR_CODES:
        return SES_ERROR_CODES[code]
    metadata = response.get("ResponseMetadata")
    status = metadata.get("HTTPStatusCode") if isinstance(metadata, dict) else None
    return classify_http_status(status) if isinstance(status, int) else None


def _classify_postmark_422(error: BaseException) -> Outcome | None:
    try:
        body = error.response.json()  # type: ignore[attr-defined]
        code, text = body["ErrorCode"], str(body.get("Message", ""))
    except Exception:  # no response, not JSON, not Postmark's shape
        return None
    if code == 300 and "sender signature" in text.lower():
        # "Invalid 'From' address: ... is not a verified sender signature":
        # a setting of this mailer, not a fault of the message.
        return Outcome.INCOMPATIBLE
    return POSTMARK_ERROR_CODES.get(code) if isinstance(code, int) else None


def _classify_nested_router(error: BaseException) -> Outcome | None:
    from .errors import DeliveryError

    if not isinstance(error, DeliveryError) or len(error.failures) != 1:
        return None
    failure = error.failures[0]
    if failure.status is MessageStatus.UNCERTAIN:
        return Outcome.UNCERTAIN
    if failure.status is MessageStatus.REJECTED:
        return Outcome.REJECTED
    if failure.attempts and all(a.outcome is Outcome.INCOMPATIBLE for a in failure.attempts):
        return Outcome.INCOMPATIBLE
    return Outcome.NOT_SENT


def _too_large(error: smtplib.SMTPResponseException) -> bool:
    """552 to MAIL FROM or to the body, or enhanced status 5.3.4 (RFC 3463:
    message too big for system): this mailer's size limit, not the message's
    fault; another mailer may take it, and the mailer is healthy."""
    text = error.smtp_error.decode(errors="replace") if isinstance(
        error.smtp_error, bytes
    ) else str(error.smtp_error)
    return error.smtp_code == 552 or text.lstrip().startswith("5.3.4")


def _classify_smtp(error: smtplib.SMTPException, stage: Stage) -> Outcome:
    if isinstance(error, (smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) and _too_large(
        error
    ):
        return Outcome.INCOMPATIBLE
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        if codes and all(500 <= code < 600 for code in codes):
            return Outcome.REJECTED
        return Outcome.NOT_SENT
    if isinstance(error, smtplib.SMTPSenderRefused):
        # A relay refusing the envelope sender is relay policy (unverified
        # domain, quota); another mailer may accept the same sender.
        return Outcome.NOT_SENT
    if isinstance(error, smtplib.SMTPDataError):
        return _smtp_code_outcome(error.smtp_code, permanent=Outcome.REJECTED)
    if isinstance(
        error,
        (
            smtplib.SMTPAuthenticationError,
            smtplib.SMTPHeloError,
            smtplib.SMTPConnectError,
            smtplib.SMTPNotSupportedError,
        ),
    ):
        return Outcome.NOT_SENT
    if isinstance(error, smtplib.SMTPResponseException):
        if stage is Stage.BODY_SENT:
            return _smtp_code_outcome(error.smtp_code, permanent=Outcome.REJECTED)
        return Outcome.NOT_SENT
    # SMTPServerDisconnected and anything else without a reply code.
    return _by_stage(stage)


def _by_stage(stage: Stage) -> Outcome:
    if stage in (Stage.CONNECT, Stage.ENVELOPE):
        return Outcome.NOT_SENT
    return Outcome.UNCERTAIN


def default_classifier(error: BaseException, stage: Stage) -> Outcome:
    """Decide an attempt's outcome from the exception and the stage it happened at.

    ==========================================  =================================
    what happened                               outcome
    ==========================================  =================================
    anything while opening the connection       not sent
    SMTP 4xx (RCPT, DATA), sender refused       not sent
    SMTP 5xx for every recipient / after DATA   rejected
    SMTP 552 / 5.3.4: too large for the mailer  incompatible
    connection lost or timeout before the body  not sent
    connection lost or timeout after the body   uncertain
    HTTP 5xx, 429, 401, 402, 403, 404           not sent
    HTTP 400, 422                               rejected
    HTTP 413 (too large for this mailer)        incompatible
    Postmark 422: by ErrorCode                  see POSTMARK_ERROR_CODES
    Amazon SES (boto3): by error code           see SES_ERROR_CODES
    HTTP connect error / connect timeout        not sent
    HTTP read timeout, dropped after request    uncertain
    HTTP 2xx with an unparsable body            uncertain
    Anymail recipients refused/invalid address  rejected
    Anymail unsupported feature/serialization   incompatible
    ValueError (bad header or address)          rejected
    TypeError, UnicodeError                     incompatible
    unknown error from a backend                uncertain (conservative)
    ==========================================  =================================
    """
    nested = _classify_nested_router(error)
    if nested is not None:
        return nested
    if stage is Stage.CONNECT:
        return Outcome.NOT_SENT
    if isinstance(error, smtplib.SMTPException):
        return _classify_smtp(error, stage)
    if stage in MAY_HAVE_LEFT:
        return _classify_after_sending(error, stage)
    if stage is Stage.ENVELOPE and (
        isinstance(error, OSError) or classify_transport_chain(error) is not None
    ):
        # Lost while the message was still being written: incomplete, unusable.
        return Outcome.NOT_SENT
    anymail = _classify_anymail(error)
    if anymail is not None:
        return anymail
    if isinstance(error, ImproperlyConfigured):
        return Outcome.NOT_SENT
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status, int):
        return classify_http_status(status)
    transport = classify_transport_chain(error)
    if transport is not None:
        return transport
    if isinstance(error, OSError):
        return _by_stage(stage)
    if stage is not Stage.BODY_SENT:
        if isinstance(error, (UnicodeError, TypeError)):
            return Outcome.INCOMPATIBLE
        if isinstance(error, ValueError):
            return Outcome.REJECTED
    return _by_stage(stage)
