"""django-anymail's Amazon SES backend, which talks to AWS through boto3.

boto3 keeps its timeouts and retries in a botocore ``Config`` that the client
is created from in ``open()``; its connections are urllib3's, reached through
botocore's private ``_endpoint.http_session`` (the attribute names are in
``WATCHED_ATTRIBUTES``, checked against the installed botocore by
tests/test_leaf_kinds.py). AWS answers errors as a parsed ``response`` dict
whose ``Error.Code`` says more than the HTTP status: SES answers 400 for
throttling, an exhausted quota and a paused account as well as for a bad
message. A bulk send reports a status per destination.
"""

from __future__ import annotations

from typing import Any

from ..outcomes import Outcome
from .anymail_requests import (
    REQUESTS_TRANSPORT,
    AnymailKind,
    install,
    reporting_pool,
    track_session,
)
from .base import AUTHENTICATED, ProbeFailed, TransportNames, classify_http_status

#: botocore internals used to watch connections: client → endpoint → HTTP
#: session → its urllib3 pool manager and the pool classes it gives proxies.
ENDPOINT = "_endpoint"
HTTP_SESSION = "http_session"
POOL_MANAGER = "_manager"
PROXY_POOL_CLASSES = "_pool_classes_by_scheme"
WATCHED_ATTRIBUTES = (ENDPOINT, HTTP_SESSION, POOL_MANAGER, PROXY_POOL_CLASSES)

#: Amazon SES error codes (boto3's ``response["Error"]["Code"]``).
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

#: urllib3's names (boto3 uses it too), and botocore's "could not reach the
#: endpoint": the request never left.
BOTO_TRANSPORT = TransportNames(
    connect_failed=REQUESTS_TRANSPORT.connect_failed,
    lost_after_request=REQUESTS_TRANSPORT.lost_after_request,
    never_left=REQUESTS_TRANSPORT.never_left | {"EndpointConnectionError"},
)


def aws_outcome(response: Any) -> Outcome | None:
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
    if isinstance(status, int):
        return classify_http_status(status)
    return None


def boto_config(backend: Any) -> Any:
    """The botocore ``Config`` a boto3-based leaf will create its client with."""
    params = getattr(backend, "client_params", None)
    config = params.get("config") if isinstance(params, dict) else None
    return config if hasattr(config, "merge") and hasattr(config, "retries") else None


class BotoKind(AnymailKind):
    name = "boto"
    transport = BOTO_TRANSPORT

    def recognises(self, backend: Any) -> bool:
        # Any leaf configured with a botocore Config (Anymail's Amazon SES,
        # or another boto3-based backend: then only its timeouts are handled).
        return boto_config(backend) is not None

    def track_transport(self, backend: Any) -> bool:
        if track_session(backend):
            return True
        client = getattr(backend, "client", None)
        http_session = getattr(getattr(client, ENDPOINT, None), HTTP_SESSION, None)
        if not install(getattr(http_session, POOL_MANAGER, None)):
            return False
        classes = getattr(http_session, PROXY_POOL_CLASSES, None)
        if isinstance(classes, dict):
            # botocore gives its proxy managers these classes as they are created.
            setattr(
                http_session,
                PROXY_POOL_CLASSES,
                {scheme: reporting_pool(cls) for scheme, cls in classes.items()},
            )
        return True

    def bulk_codes(self, response: Any) -> list[str] | None:
        if not isinstance(response, dict):
            return None
        results = response.get("BulkEmailEntryResults")
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            return None
        return [str(r.get("Status")) for r in results]

    def bulk_outcome(self, code: str) -> Outcome:
        return SES_BULK_STATUSES.get(code, Outcome.NOT_SENT)

    def response_outcome(self, response: Any) -> Outcome | None:
        return aws_outcome(response)

    def bound_timeout(self, backend: Any, override: float | None, default: float | None) -> None:
        if hasattr(backend, "timeout"):
            super().bound_timeout(backend, override, default)
            return
        config = boto_config(backend)
        if config is None:
            return
        # The client is created from this Config in open(), after this.
        if override is not None:
            limits = type(config)(connect_timeout=override, read_timeout=override)
            backend.client_params["config"] = config.merge(limits)
        elif default is not None:
            limits = type(config)(connect_timeout=default, read_timeout=default)
            backend.client_params["config"] = limits.merge(config)  # the user's values win

    def timeout(self, backend: Any) -> float | None:
        own = super().timeout(backend)
        if own is not None:
            return own
        value = getattr(boto_config(backend), "read_timeout", None)
        return None if value is None else float(value)

    def retries_on_its_own(self, backend: Any) -> tuple[str, str] | None:
        """botocore resends requests itself by default: after a read timeout
        that resends a message the ESP may already have."""
        config = boto_config(backend)
        if config is None:
            return None
        retries = config.retries or {}
        if "total_max_attempts" in retries:
            retrying = bool(retries["total_max_attempts"] > 1)
        else:
            retrying = bool(retries.get("max_attempts", 1) > 0)
        if not retrying:
            return None
        return (
            "boto3 retries failed requests itself, read timeouts included, resending a "
            "message the ESP may already have",
            'Set OPTIONS {"client_params": {"config": {"retries": '
            '{"total_max_attempts": 1}}}} and let the router fail over.',
        )

    def probe(self, backend: Any, timeout: float | None) -> tuple[str, str]:
        """SES GetAccount: credentials, and whether the account may send at all."""
        client = getattr(backend, "client", None)
        if client is None or not hasattr(client, "get_account"):
            return super().probe(backend, timeout)
        account = client.get_account()
        quota = account.get("SendQuota") or {}
        if account.get("SendingEnabled") is False:
            raise ProbeFailed(
                f"SES reports sending disabled for this account "
                f"(enforcement status {account.get('EnforcementStatus', 'unknown')})"
            )
        return AUTHENTICATED, (
            f"SES account: sending enabled, {quota.get('SentLast24Hours', 0):.0f} of "
            f"{quota.get('Max24HourSend', 0):.0f} messages sent in the last 24 h, "
            f"at most {quota.get('MaxSendRate', 0):g}/s"
        )


BOTO = BotoKind()
