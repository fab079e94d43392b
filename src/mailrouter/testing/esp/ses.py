"""Amazon SES v2 as boto3's ``sesv2`` client (Anymail's Amazon SES backend)
calls it: ``POST /v2/email/outbound-emails`` (SendEmail, the raw MIME message
in ``Content.Raw.Data``), ``POST /v2/email/outbound-bulk-emails``
(SendBulkEmail) and ``GET /v2/email/account`` (GetAccount). Errors carry their
AWS error code in ``__type``; credentials are the access key id in the SigV4
``Authorization`` header (the signature itself is not checked)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any

from ._common import ESPFormat, PayloadError, ReceivedESPMessage, addr_specs

PATH = "/v2/email/outbound-emails"
BULK_PATH = "/v2/email/outbound-bulk-emails"
ACCOUNT_PATH = "/v2/email/account"
#: The AWS error code SES answers with, per HTTP status this server sends.
ERROR_TYPES = {
    400: "BadRequestException",
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "NotFoundException",
    405: "BadRequestException",
    422: "MessageRejected",
    429: "TooManyRequestsException",
    500: "InternalFailure",
    503: "ServiceUnavailable",
}


class AmazonSES(ESPFormat):
    name = "ses"

    def handles(self, path: str) -> bool:
        return path in (PATH, BULK_PATH)

    def check_auth(self, headers: Message, api_key: str | None) -> tuple[bool, bool]:
        header = headers.get("Authorization") or ""
        credential = re.search(r"Credential=([^/,\s]+)/", header)
        present = credential is not None
        if api_key is None:
            return present, True
        return present, credential is not None and credential.group(1) == api_key

    def parse(
        self, path: str, headers: Message, body: bytes, auth_present: bool
    ) -> list[ReceivedESPMessage]:
        if path == BULK_PATH:
            return self._parse_bulk(path, body, auth_present)
        try:
            data = json.loads(body)
            raw = base64.b64decode(data["Content"]["Raw"]["Data"], validate=True)
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise PayloadError("Content.Raw.Data must be a base64 MIME message") from exc
        mime = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        destination = data.get("Destination") or {}

        def addresses(header: str, key: str) -> tuple[str, ...]:
            listed = destination.get(key)
            if isinstance(listed, list):
                return addr_specs([str(a) for a in listed])
            return addr_specs([str(v) for v in mime.get_all(header, [])])

        to, cc, bcc = addresses("To", "ToAddresses"), addresses("Cc", "CcAddresses"), addresses(
            "Bcc", "BccAddresses"
        )
        if not (to or cc or bcc):
            raise PayloadError("Missing required parameter: Destination")
        message_id = mime.get("Message-ID")
        return [
            ReceivedESPMessage(
                esp=self.name,
                path=path,
                to=to,
                cc=cc,
                bcc=bcc,
                from_email=str(data.get("FromEmailAddress") or mime.get("From") or ""),
                subject=str(mime.get("Subject") or ""),
                message_id=str(message_id).strip() if message_id else None,
                esp_message_id=str(uuid.uuid4()),
                auth_header_present=auth_present,
                raw_body=body,
                payload=data,
            )
        ]

    def _parse_bulk(self, path: str, body: bytes, auth_present: bool) -> list[ReceivedESPMessage]:
        """SES v2 SendBulkEmail: one record per ``BulkEmailEntries`` item."""
        try:
            data = json.loads(body)
            entries = data["BulkEmailEntries"]
            if not isinstance(entries, list) or not entries:
                raise TypeError("no entries")
        except (ValueError, TypeError, KeyError) as exc:
            raise PayloadError("BulkEmailEntries must be a non-empty list") from exc
        records = []
        for entry in entries:
            destination = entry.get("Destination") or {}
            headers = {
                str(h.get("Name", "")).lower(): str(h.get("Value", ""))
                for h in entry.get("ReplacementHeaders") or []
            }
            records.append(
                ReceivedESPMessage(
                    esp=self.name,
                    path=path,
                    to=addr_specs([str(a) for a in destination.get("ToAddresses") or []]),
                    cc=addr_specs([str(a) for a in destination.get("CcAddresses") or []]),
                    bcc=addr_specs([str(a) for a in destination.get("BccAddresses") or []]),
                    from_email=str(data.get("FromEmailAddress") or ""),
                    subject="",
                    message_id=headers.get("message-id", "").strip() or None,
                    esp_message_id=str(uuid.uuid4()),
                    auth_header_present=auth_present,
                    raw_body=body,
                    payload=entry,
                )
            )
        return records

    def success_body(
        self, path: str, records: list[ReceivedESPMessage], errors: list[Any]
    ) -> Any:
        if path == BULK_PATH:
            return {
                "BulkEmailEntryResults": [
                    {"Status": "SUCCESS", "MessageId": r.esp_message_id}
                    if e is None
                    else {"Status": str(e), "Error": f"Simulated {e}"}
                    for r, e in zip(records, errors, strict=True)
                ]
            }
        return {"MessageId": records[0].esp_message_id}

    def error_body(self, status: int, detail: str | None = None) -> dict[str, Any]:
        error_type = ERROR_TYPES.get(status, "InternalFailure")
        return {"__type": error_type, "message": detail or f"Simulated {error_type}"}

    @staticmethod
    def account_body(sending_enabled: bool, sent_last_24_hours: int) -> dict[str, Any]:
        """The answer to GetAccount (what a probe asks)."""
        return {
            "SendingEnabled": sending_enabled,
            "ProductionAccessEnabled": True,
            "EnforcementStatus": "HEALTHY" if sending_enabled else "SHUTDOWN",
            "SendQuota": {
                "Max24HourSend": 50000.0,
                "MaxSendRate": 14.0,
                "SentLast24Hours": float(sent_last_24_hours),
            },
        }
