"""An ``EmailMessage`` as JSON and back: the outbox row's payload.

JSON, never pickle: a database row must not be able to run code when a worker
reads it. Decoding builds only ``EmailMessage``, ``EmailMultiAlternatives`` or
Anymail's ``AnymailMessage``; it never imports a class named by the row.

Values JSON cannot hold are tagged: ``{"$bytes": base64}``, ``{"$datetime":
iso}``, ``{"$date": iso}``, ``{"$tuple": [...]}``, and a dict whose keys could
be mistaken for a tag is wrapped as ``{"$dict": {...}}``. Lazy translation
strings are resolved (in the active language) when the message is encoded.
"""

from __future__ import annotations

import base64
import datetime
import email.parser
import email.policy
from collections.abc import Mapping
from email.message import Message, MIMEPart
from email.mime.base import MIMEBase
from typing import Any

from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.utils.functional import Promise

from ..errors import MailRouterError
from ..leafkinds.anymail_requests import MESSAGE_ATTRIBUTES, PAYLOAD_KIND, is_unset, message_class

#: Bumped when the layout changes; decode() refuses versions it does not know.
VERSION = 1

#: ESP per-message attributes (the Anymail leaf kind's), read from any
#: EmailMessage that has them.
ESP_ATTRIBUTES = MESSAGE_ATTRIBUTES

#: Undocumented subtypes Django <= 5.2 honours (6.0 raises on ``mixed_subtype``):
#: stored only when set on the instance.
_SUBTYPE_ATTRIBUTES = ("mixed_subtype", "alternative_subtype")

_TAGS = ("$bytes", "$datetime", "$date", "$tuple", "$dict")


class PayloadError(MailRouterError, ValueError):
    """The message cannot be stored faithfully, or could never be delivered
    (raised at enqueue, naming the field), or a stored payload cannot be read
    back (raised by a worker)."""


# -- values -----------------------------------------------------------------------


def encode_value(value: Any, where: str) -> Any:
    """A JSON-ready copy of ``value``; ``where`` names it in errors."""
    if isinstance(value, Promise):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"$date": value.isoformat()}
    if isinstance(value, tuple):
        return {"$tuple": [encode_value(item, where) for item in value]}
    if isinstance(value, list | set | frozenset):
        items = value if isinstance(value, list) else sorted(value, key=repr)
        return [encode_value(item, where) for item in items]
    if isinstance(value, Mapping):
        encoded: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, Promise):
                key = str(key)
            if not isinstance(key, str):
                raise PayloadError(
                    f"{where}: dict key {key!r} is a {type(key).__name__}; "
                    "the outbox stores only string keys"
                )
            encoded[key] = encode_value(item, f"{where}[{key!r}]")
        if len(encoded) == 1 and next(iter(encoded)) in _TAGS:
            return {"$dict": encoded}
        return encoded
    raise PayloadError(
        f"{where}: a {type(value).__name__} cannot be stored in the outbox "
        "(JSON values, bytes, dates, lists, tuples and string-keyed dicts can)"
    )


def decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [decode_value(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "$bytes":
            return base64.b64decode(inner)
        if tag == "$datetime":
            return datetime.datetime.fromisoformat(inner)
        if tag == "$date":
            return datetime.date.fromisoformat(inner)
        if tag == "$tuple":
            return tuple(decode_value(item) for item in inner)
        if tag == "$dict":
            return {key: decode_value(item) for key, item in inner.items()}
    return {key: decode_value(item) for key, item in value.items()}


def _text(value: Any, where: str) -> Any:
    """A str field: lazy strings resolved; anything else kept if storable."""
    return encode_value(value, where)


# -- attachments ------------------------------------------------------------------


class _StoredMIMEBase(MIMEBase):
    """A legacy ``MIMEBase`` attachment read back from the outbox (Django's
    ``isinstance(attachment, MIMEBase)`` test must still recognise it)."""

    def __init__(self, policy: Any = None) -> None:
        Message.__init__(self, policy=email.policy.compat32)


def _encode_attachment(attachment: Any, where: str) -> dict[str, Any]:
    if isinstance(attachment, MIMEPart):
        return {"mimepart": base64.b64encode(attachment.as_bytes()).decode("ascii")}
    if isinstance(attachment, MIMEBase):
        return {"mimebase": base64.b64encode(attachment.as_bytes()).decode("ascii")}
    if isinstance(attachment, Message):
        raise PayloadError(
            f"{where}: a {type(attachment).__name__} is not an attachment Django sends "
            "(use email.message.MIMEPart)"
        )
    try:
        filename, content, mimetype = attachment
    except (TypeError, ValueError):
        raise PayloadError(
            f"{where}: expected (filename, content, mimetype) or a MIMEPart, "
            f"got {type(attachment).__name__}"
        ) from None
    return {
        "filename": encode_value(filename, f"{where} filename"),
        "content": encode_value(content, f"{where} content"),
        "mimetype": encode_value(mimetype, f"{where} mimetype"),
    }


def _decode_attachment(data: Mapping[str, Any]) -> Any:
    from django.core.mail.message import EmailAttachment

    if "mimepart" in data:
        raw = base64.b64decode(data["mimepart"])
        parser = email.parser.BytesParser(_class=MIMEPart, policy=email.policy.default)  # type: ignore[arg-type]
        return parser.parsebytes(raw)
    if "mimebase" in data:
        raw = base64.b64decode(data["mimebase"])
        return email.parser.BytesParser(
            _class=_StoredMIMEBase, policy=email.policy.compat32
        ).parsebytes(raw)
    return EmailAttachment(
        decode_value(data["filename"]), decode_value(data["content"]), data["mimetype"]
    )


# -- messages ---------------------------------------------------------------------


def _kind(message: EmailMessage) -> str:
    esp_class = message_class()
    if esp_class is not None and isinstance(message, esp_class):
        return PAYLOAD_KIND
    if isinstance(message, EmailMultiAlternatives):
        return "alternatives"
    return "email"


def encode(message: EmailMessage) -> dict[str, Any]:
    """The message as a JSON-ready dict. Raises ``PayloadError`` naming the
    field when something in it cannot be stored faithfully."""
    data: dict[str, Any] = {
        "v": VERSION,
        "kind": _kind(message),
        "subject": _text(message.subject, "subject"),
        "body": _text(message.body, "body"),
        "from_email": _text(message.from_email, "from_email"),
        "to": [_text(a, "to") for a in message.to],
        "cc": [_text(a, "cc") for a in message.cc],
        "bcc": [_text(a, "bcc") for a in message.bcc],
        "reply_to": [_text(a, "reply_to") for a in message.reply_to],
        "headers": [
            [_text(name, "headers"), _text(value, f"headers[{name!r}]")]
            for name, value in message.extra_headers.items()
        ],
        "content_subtype": message.content_subtype,
        "encoding": None if message.encoding is None else str(message.encoding),
        "attachments": [
            _encode_attachment(item, f"attachments[{index}]")
            for index, item in enumerate(message.attachments)
        ],
    }
    alternatives = getattr(message, "alternatives", None)
    if alternatives:
        data["alternatives"] = [
            [encode_value(content, f"alternatives[{index}]"), _text(mimetype, "mimetype")]
            for index, (content, mimetype) in enumerate(alternatives)
        ]
    subtypes = {
        name: vars(message)[name] for name in _SUBTYPE_ATTRIBUTES if name in vars(message)
    }
    if subtypes:
        data["subtypes"] = subtypes
    esp = {}
    for name in ESP_ATTRIBUTES:
        if hasattr(message, name):
            value = getattr(message, name)
            if not is_unset(value):
                esp[name] = encode_value(value, name)
    if esp:
        data[PAYLOAD_KIND] = esp
    pins = getattr(message, "mailers", None)
    if pins is not None:
        data["mailers"] = encode_value(pins, "mailers")
    return data


def decode(data: Mapping[str, Any]) -> EmailMessage:
    """The message a payload holds. Raises ``PayloadError`` on a payload this
    version cannot read."""
    if not isinstance(data, Mapping) or data.get("v") != VERSION:
        version = data.get("v") if isinstance(data, Mapping) else None
        raise PayloadError(f"unknown outbox payload version {version!r}")
    kind = data["kind"]
    cls: type[EmailMessage]
    if kind == PAYLOAD_KIND:
        esp_class = message_class()
        if esp_class is None:
            raise PayloadError("the payload is an AnymailMessage but Anymail is not installed")
        cls = esp_class
    elif kind == "alternatives":
        cls = EmailMultiAlternatives
    elif kind == "email":
        cls = EmailMessage
    else:
        raise PayloadError(f"unknown message kind {kind!r}")
    message = cls(
        subject=decode_value(data["subject"]),
        body=decode_value(data["body"]),
        from_email=decode_value(data["from_email"]),
        to=decode_value(data["to"]),
        cc=decode_value(data["cc"]),
        bcc=decode_value(data["bcc"]),
        reply_to=decode_value(data["reply_to"]),
        headers={name: decode_value(value) for name, value in data["headers"]},
    )
    # Assigned, not passed: EmailMessage would not keep an empty from_email or
    # a None body as given.
    message.from_email = decode_value(data["from_email"])
    message.body = decode_value(data["body"])
    message.content_subtype = data["content_subtype"]
    message.encoding = data["encoding"]
    message.attachments = [_decode_attachment(item) for item in data["attachments"]]
    if "alternatives" in data:
        from django.core.mail.message import EmailAlternative

        message.alternatives = [  # type: ignore[attr-defined]
            EmailAlternative(decode_value(content), mimetype)
            for content, mimetype in data["alternatives"]
        ]
    for name, value in data.get("subtypes", {}).items():
        setattr(message, name, value)
    for name, value in data.get(PAYLOAD_KIND, {}).items():
        setattr(message, name, decode_value(value))
    if "mailers" in data:
        message.mailers = decode_value(data["mailers"])  # type: ignore[attr-defined]
    return message
