"""What every ESP format of the fake server shares: the message record, the
payload error, and the ``ESPFormat`` interface each ESP module implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses
from typing import Any


@dataclass(frozen=True)
class ReceivedESPMessage:
    """One message received by :class:`~mailrouter.testing.FakeESPServer`.

    A Postmark batch request yields one record per message in the batch; all
    of them share ``raw_body``.

    * ``esp``: ``"mailgun"``, ``"postmark"`` or ``"ses"``.
    * ``path``: request path (for Mailgun it contains the sender domain).
    * ``to``/``cc``/``bcc``: addr-specs (display names dropped).
    * ``from_email``: the From value exactly as sent (may include a display name).
    * ``message_id``: value of the custom ``Message-ID`` header the backend
      sent (Mailgun ``h:Message-Id`` field, Postmark ``Headers`` entry, the
      raw MIME message's header for SES), stripped of surrounding whitespace, or ``None``.
    * ``esp_message_id``: the id this server assigned (the one returned to the
      client in ``ok`` mode; never returned in the other modes).
    * ``auth_header_present``: whether the request carried the ESP's credential
      header (``Authorization`` for Mailgun and SES, ``X-Postmark-Server-Token``
      for Postmark), valid or not.
    * ``payload``: the decoded message fields -- Mailgun: ``{field: [values]}``;
      Postmark: the message's JSON object; SES: the request's JSON object.
    """

    esp: str
    path: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    from_email: str
    subject: str
    message_id: str | None
    esp_message_id: str
    auth_header_present: bool
    raw_body: bytes = field(repr=False)
    payload: Mapping[str, Any] = field(repr=False, compare=False, hash=False)


#: Alias: the record is per message, but callers may think of it per request.
ReceivedRequest = ReceivedESPMessage


class PayloadError(ValueError):
    """The request body could not be understood (answered with 400)."""


class ESPFormat(ABC):
    """One ESP's send API as the fake server speaks it: which paths are its,
    how requests authenticate, how a send request's body becomes message
    records, and what its answers look like. The server (``_server``) does
    the HTTP and the faults; one instance per server."""

    #: ``ReceivedESPMessage.esp`` of this ESP's records.
    name: str

    @abstractmethod
    def handles(self, path: str) -> bool:
        """Whether ``path`` is one of this ESP's send endpoints."""

    @abstractmethod
    def check_auth(self, headers: Message, api_key: str | None) -> tuple[bool, bool]:
        """(credential header present, credentials acceptable); with no
        ``api_key`` any credentials are acceptable."""

    @abstractmethod
    def parse(
        self, path: str, headers: Message, body: bytes, auth_present: bool
    ) -> list[ReceivedESPMessage]:
        """The messages of one send request; ``PayloadError`` if malformed."""

    @abstractmethod
    def success_body(
        self, path: str, records: list[ReceivedESPMessage], errors: list[Any]
    ) -> Any:
        """The JSON answer to a send request served in ``ok`` mode; ``errors``
        has one entry per record: None (accepted) or that item's failure."""

    @abstractmethod
    def error_body(self, status: int, detail: str | None = None) -> dict[str, Any]:
        """An error answer shaped as this ESP's, for HTTP ``status``."""

    def account_read(self, method: str, path: str) -> Any:
        """The answer to one of this ESP's cheap authenticated read endpoints
        (what a probe asks to check credentials), or None if ``path`` is not
        one. Such requests consume no fault."""
        return None


def addr_specs(values: Iterable[str]) -> tuple[str, ...]:
    """The addr-specs of address header values (display names dropped)."""
    return tuple(addr for _name, addr in getaddresses(list(values)) if addr)
