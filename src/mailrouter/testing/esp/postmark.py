"""Postmark's send API: ``POST /email`` and ``/email/withTemplate/`` (one JSON
message), ``/email/batch`` (a JSON list) and ``/email/batchWithTemplates``
(``{"Messages": [...]}``); credentials in ``X-Postmark-Server-Token``; and
``GET /server``, what a probe asks to check the token."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from email.message import Message
from typing import Any

from ._common import ESPFormat, PayloadError, ReceivedESPMessage, addr_specs

#: Path → request shape.
PATHS = {
    "/email": "single",
    "/email/withTemplate": "single",
    "/email/withTemplate/": "single",
    "/email/batch": "batch",
    "/email/batchWithTemplates": "batch_with_templates",
}
# Postmark documents ErrorCode values for most of these; 10 = bad token,
# 300 = invalid request, 100 = maintenance, 412 = account pending approval.
ERROR_CODES = {
    400: (300, "Invalid email request"),
    401: (10, "Request does not contain a valid Server token."),
    403: (412, "Your account is pending approval; sending is restricted."),
    405: (405, "Method not allowed"),
    422: (300, "Invalid email request: simulated unprocessable entity"),
    429: (429, "Rate limit exceeded, retry later."),
    500: (500, "Internal server error"),
    503: (100, "Maintenance"),
}


class Postmark(ESPFormat):
    name = "postmark"

    def handles(self, path: str) -> bool:
        return path in PATHS

    def check_auth(self, headers: Message, api_key: str | None) -> tuple[bool, bool]:
        token = headers.get("X-Postmark-Server-Token")
        present = token is not None
        if api_key is None:
            return present, True
        return present, token == api_key

    def parse(
        self, path: str, headers: Message, body: bytes, auth_present: bool
    ) -> list[ReceivedESPMessage]:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError("Invalid JSON") from exc
        kind = PATHS[path]
        items: Any
        if kind == "single":
            items = [data]
        elif kind == "batch":
            items = data
        else:
            items = data.get("Messages") if isinstance(data, dict) else None
        if not isinstance(items, list) or not all(isinstance(m, dict) for m in items):
            raise PayloadError("Invalid email request: unexpected JSON shape")
        records = []
        for item in items:
            if not item.get("From"):
                raise PayloadError("Invalid 'From' address: ''.")
            message_id = None
            item_headers = item.get("Headers") or []
            if isinstance(item_headers, list):
                for header in item_headers:
                    if (
                        isinstance(header, dict)
                        and str(header.get("Name", "")).lower() == "message-id"
                    ):
                        message_id = str(header.get("Value", "")).strip() or None
            records.append(
                ReceivedESPMessage(
                    esp=self.name,
                    path=path,
                    to=addr_specs([str(item.get("To") or "")]),
                    cc=addr_specs([str(item.get("Cc") or "")]),
                    bcc=addr_specs([str(item.get("Bcc") or "")]),
                    from_email=str(item["From"]),
                    subject=str(item.get("Subject") or ""),
                    message_id=message_id,
                    esp_message_id=str(uuid.uuid4()),
                    auth_header_present=auth_present,
                    raw_body=body,
                    payload=item,
                )
            )
        return records

    def success_body(
        self, path: str, records: list[ReceivedESPMessage], errors: list[Any]
    ) -> Any:
        submitted = datetime.now(UTC).isoformat()
        results = [
            {
                "To": str(r.payload.get("To") or ""),
                "SubmittedAt": submitted,
                "MessageID": r.esp_message_id,
                "ErrorCode": 0,
                "Message": "OK",
            }
            if e is None
            else e
            for r, e in zip(records, errors, strict=True)
        ]
        return results[0] if PATHS[path] == "single" else results

    def error_body(self, status: int, detail: str | None = None) -> dict[str, Any]:
        code, message = ERROR_CODES.get(status, (status, "Error"))
        return {"ErrorCode": code, "Message": detail or message}

    def account_read(self, method: str, path: str) -> Any:
        if method != "GET" or path.rstrip("/") != "/server":
            return None
        return {"ID": 1, "Name": "Fake Postmark server", "ApiTokens": [],
                "Color": "blue", "DeliveryType": "Live"}
