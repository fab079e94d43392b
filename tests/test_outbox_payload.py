"""The outbox payload: every message survives JSON and comes back the same."""

from __future__ import annotations

import datetime
import json
import re
from email.message import MIMEPart
from email.mime.text import MIMEText
from typing import Any

import django
import pytest
from anymail.message import AnymailMessage
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.utils import translation
from django.utils.translation import gettext_lazy
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrouter.outbox.payload import PayloadError, decode, encode
from mailrouter.outbox.storable import payload_size

from .conftest import examples

HAS_MIMEPART = django.VERSION >= (6, 0)
SAFE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), max_codepoint=0x2FFF), max_size=20
)
BODY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=60
)
ADDRESS = st.sampled_from(
    ["a@example.com", "Bé <b@example.de>", "c@eu.example.com", '"Q, R" <q@example.org>']
)
ADDRESSES = st.lists(ADDRESS, max_size=3)
KEY = st.text(alphabet="abcdefghij$_", min_size=1, max_size=6)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | SAFE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEY, inner, max_size=3),
    max_leaves=8,
)
# Bytes with a text/* type are decoded by attach(); Django 5.2 cannot render
# them when they are put in ``attachments`` directly, as these tests do.
BINARY_MIMETYPE = st.sampled_from(["application/pdf", "image/png", "application/zip"])


@st.composite
def attachments(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["bytes", "text", "mimebase"] + (["mimepart"] * HAS_MIMEPART)))
    if kind == "mimepart":
        part = MIMEPart()
        part.set_content(draw(BODY_TEXT), subtype="plain")
        part.add_header("Content-Disposition", "attachment", filename="note.txt")
        return part
    if kind == "mimebase":
        legacy = MIMEText(draw(BODY_TEXT), "plain", "utf-8")
        legacy.add_header("Content-Disposition", "attachment", filename="legacy.txt")
        return legacy
    filename = draw(st.sampled_from(["a.pdf", "Grüße.txt", "data.csv"]))
    if kind == "bytes":
        return (filename, draw(st.binary(max_size=40)), draw(BINARY_MIMETYPE))
    return (filename, draw(BODY_TEXT), "text/plain")


@st.composite
def messages(draw: st.DrawFn) -> EmailMessage:
    kind = draw(st.sampled_from(["email", "alternatives", "anymail"]))
    cls = {"email": EmailMessage, "alternatives": EmailMultiAlternatives,
           "anymail": AnymailMessage}[kind]
    subject: Any = draw(SAFE_TEXT)
    if draw(st.booleans()):
        subject = gettext_lazy("Password reset")
    message = cls(
        subject=subject,
        body=draw(BODY_TEXT),
        from_email=draw(ADDRESS),
        to=draw(ADDRESSES),
        cc=draw(ADDRESSES),
        bcc=draw(ADDRESSES),
        reply_to=draw(ADDRESSES),
        headers={
            **draw(st.dictionaries(st.sampled_from(["X-Tag", "X-Campaign", "List-Id"]),
                                   SAFE_TEXT.map(str.strip), max_size=2)),
            "Message-ID": "<fixed@example.com>",
            "Date": "Tue, 01 Dec 2026 10:00:00 -0000",
        },
    )
    for item in draw(st.lists(attachments(), max_size=3)):
        message.attachments.append(item)
    if kind != "email":
        for _ in range(draw(st.integers(0, 2))):
            message.attach_alternative(f"<p>{draw(BODY_TEXT)}</p>", "text/html")  # type: ignore[attr-defined]
    if draw(st.booleans()):
        message.content_subtype = "html"
    anymail_values = {
        "tags": st.lists(SAFE_TEXT, max_size=3),
        "metadata": st.dictionaries(KEY, JSONISH, max_size=3),
        "merge_data": st.dictionaries(ADDRESS, st.dictionaries(KEY, JSONISH, max_size=2),
                                      max_size=2),
        "merge_global_data": st.dictionaries(KEY, JSONISH, max_size=2),
        "merge_metadata": st.dictionaries(ADDRESS, st.dictionaries(KEY, SAFE_TEXT, max_size=2),
                                          max_size=2),
        "merge_headers": st.dictionaries(ADDRESS, st.dictionaries(st.just("X-Id"), SAFE_TEXT),
                                         max_size=2),
        "template_id": SAFE_TEXT,
        "send_at": st.datetimes(timezones=st.just(datetime.UTC)) | st.dates(),
        "esp_extra": st.dictionaries(KEY, JSONISH, max_size=3),
        "track_clicks": st.booleans(),
        "track_opens": st.booleans(),
        "envelope_sender": ADDRESS,
    }
    for name in draw(st.sets(st.sampled_from(sorted(anymail_values)))):
        setattr(message, name, draw(anymail_values[name]))
    if draw(st.booleans()):
        message.mailers = draw(  # type: ignore[attr-defined]
            st.sampled_from(["eu_smtp"]) | st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)
        )
    return message


def fingerprint(message: EmailMessage) -> dict[str, Any]:
    """Everything the outbox must keep, as comparable values."""

    def attachment(item: Any) -> Any:
        if isinstance(item, MIMEPart | MIMEText) or hasattr(item, "as_bytes"):
            return (type(item).__mro__[-2].__name__, item.as_bytes())
        return tuple(item)

    values: dict[str, Any] = {
        "class": type(message).__name__,
        "subject": str(message.subject),
        "body": message.body,
        "from": message.from_email,
        "to": list(message.to),
        "cc": list(message.cc),
        "bcc": list(message.bcc),
        "reply_to": list(message.reply_to),
        "headers": dict(message.extra_headers),
        "content_subtype": message.content_subtype,
        "attachments": [attachment(item) for item in message.attachments],
        "alternatives": [tuple(a) for a in getattr(message, "alternatives", [])],
        "mailers": getattr(message, "mailers", None),
    }
    for name in ("tags", "metadata", "merge_data", "merge_global_data", "merge_metadata",
                 "merge_headers", "template_id", "send_at", "esp_extra", "track_clicks",
                 "track_opens", "envelope_sender"):
        values[name] = getattr(message, name, None)
    return values


def rendered(message: EmailMessage) -> bytes:
    """The MIME message a mailer would get, multipart boundaries normalised."""
    return re.sub(rb"=+\d+==", b"BOUNDARY", message.message().as_bytes())


@settings(max_examples=examples(60), deadline=None)
@given(messages())
def test_payload_round_trips_through_json(message: EmailMessage) -> None:
    with translation.override("en"):
        stored = json.loads(json.dumps(encode(message)))
    restored = decode(stored)
    assert fingerprint(restored) == fingerprint(message)
    assert rendered(restored) == rendered(message)


def test_lazy_strings_are_resolved_at_enqueue_in_the_active_language() -> None:
    message = EmailMessage(gettext_lazy("Password reset"), "body", to=["a@example.com"])
    message.tags = [gettext_lazy("reset")]  # type: ignore[attr-defined]
    data = encode(message)
    assert data["subject"] == "Password reset"
    assert json.loads(json.dumps(data))["anymail"]["tags"] == ["reset"]


def test_dict_keys_that_look_like_tags_are_kept() -> None:
    message = EmailMessage("s", "b", to=["a@example.com"])
    message.metadata = {"$bytes": "not bytes"}  # type: ignore[attr-defined]
    assert decode(json.loads(json.dumps(encode(message)))).metadata == {  # type: ignore[attr-defined]
        "$bytes": "not bytes"
    }


def test_unstorable_values_are_refused_naming_the_field() -> None:
    message = EmailMessage("s", "b", to=["a@example.com"])
    message.metadata = {"when": object()}  # type: ignore[attr-defined]
    with pytest.raises(PayloadError, match=r"metadata\['when'\].*object"):
        encode(message)
    message.metadata = {1: "x"}  # type: ignore[attr-defined]
    with pytest.raises(PayloadError, match="dict key 1"):
        encode(message)


def test_payload_never_names_a_class_to_import() -> None:
    message = EmailMessage("s", "b", to=["a@example.com"])
    data = encode(message)
    data["kind"] = "os.system"
    with pytest.raises(PayloadError, match="unknown message kind"):
        decode(data)
    data["v"] = 99
    with pytest.raises(PayloadError, match="version 99"):
        decode(data)


def test_encoded_size_counts_utf8_bytes() -> None:
    def size(message: EmailMessage) -> int:
        return payload_size(encode(message), nul=False)[0]

    assert size(EmailMessage("é" * 10, "", to=["a@example.com"])) > size(
        EmailMessage("e" * 10, "", to=["a@example.com"])
    )
