"""Mailgun's send API: ``POST /v3/<domain>/messages``, form-urlencoded (or
multipart with attachments), HTTP basic auth ``api:<key>``; and the domain
read a probe makes to check credentials: ``GET /v3/domains/<domain>`` (or
``GET /v3/domains`` for the list)."""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qs

from ._common import ESPFormat, PayloadError, ReceivedESPMessage, addr_specs

PATH = re.compile(r"^/v3/([^/]+)/messages/?$")
DOMAINS = re.compile(r"^/v3/domains(?:/([^/]+))?/?$")
ERROR_MESSAGES = {
    400: "'to' parameter is not a valid address. please check documentation",
    401: "Invalid private key",
    403: "Domain is not allowed to send: please activate your account",
    405: "Method not allowed",
    422: "Unprocessable entity",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class Mailgun(ESPFormat):
    name = "mailgun"

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def handles(self, path: str) -> bool:
        return PATH.match(path) is not None

    def check_auth(self, headers: Message, api_key: str | None) -> tuple[bool, bool]:
        header = headers.get("Authorization")
        present = header is not None
        if api_key is None:
            return present, True
        if header is None or not header.startswith("Basic "):
            return present, False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return present, False
        return present, decoded == f"api:{api_key}"

    def parse(
        self, path: str, headers: Message, body: bytes, auth_present: bool
    ) -> list[ReceivedESPMessage]:
        match = PATH.match(path)
        assert match is not None  # handles() said so
        ctype = headers.get("Content-Type", "")
        fields: dict[str, list[str]] = {}
        if ctype.lower().startswith("multipart/form-data"):
            # email's MIME parser copes with multipart/form-data and is still
            # in the stdlib (cgi is gone in 3.13).
            raw = b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body
            msg = BytesParser(policy=policy.HTTP).parsebytes(raw)
            if not msg.is_multipart():
                raise PayloadError("malformed multipart body")
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not isinstance(name, str):
                    continue
                if part.get_filename() is not None:
                    continue  # attachments: not needed for the record
                payload = part.get_payload(decode=True)
                value = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
                fields.setdefault(name, []).append(value)
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PayloadError("body is not UTF-8") from exc
            fields = parse_qs(text, keep_blank_values=True)
        if not fields.get("from"):
            raise PayloadError("'from' parameter is missing")
        if not (fields.get("to") or fields.get("cc") or fields.get("bcc")):
            raise PayloadError("'to' parameter is missing")
        lowered = {k.lower(): v for k, v in fields.items()}
        message_ids = lowered.get("h:message-id")
        return [
            ReceivedESPMessage(
                esp=self.name,
                path=path,
                to=addr_specs(fields.get("to", [])),
                cc=addr_specs(fields.get("cc", [])),
                bcc=addr_specs(fields.get("bcc", [])),
                from_email=", ".join(fields["from"]),
                subject=(fields.get("subject") or [""])[0],
                message_id=message_ids[0].strip() if message_ids else None,
                esp_message_id=self._new_id(match.group(1)),
                auth_header_present=auth_present,
                raw_body=body,
                payload=fields,
            )
        ]

    def _new_id(self, domain: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        return f"<{stamp}.{next(self._ids)}.{uuid.uuid4().hex[:8]}@{domain}>"

    def success_body(
        self, path: str, records: list[ReceivedESPMessage], errors: list[Any]
    ) -> Any:
        return {"id": records[0].esp_message_id, "message": "Queued. Thank you."}

    def error_body(self, status: int, detail: str | None = None) -> dict[str, Any]:
        return {"message": detail or ERROR_MESSAGES.get(status, "Error")}

    def account_read(self, method: str, path: str) -> Any:
        match = DOMAINS.match(path) if method == "GET" else None
        if match is None:
            return None
        domain = {"name": match.group(1) or "mg.example.com", "state": "active",
                  "type": "custom", "spam_action": "disabled"}
        if match.group(1) is None:
            return {"total_count": 1, "items": [domain]}
        return {"domain": domain, "receiving_dns_records": [], "sending_dns_records": []}
