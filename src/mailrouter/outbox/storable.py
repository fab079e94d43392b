"""What a database can store, for the outbox's two kinds of writes.

PostgreSQL text and ``jsonb`` cannot hold NUL (U+0000) and its JSON has no NaN
or Infinity; no UTF-8 database (nor the UTF-8 codec) takes a lone surrogate.
Such a value in an INSERT or UPDATE raises ``DataError`` or
``UnicodeEncodeError`` — and aborts the transaction it runs in.

- What the outbox writes about a delivery (error texts, notes, attempt
  records) is diagnostic: ``storable()`` replaces what cannot be stored with a
  visible escape (``\\x00``, ``\\ud800``), so an outcome write never fails on
  the text of a mailer's answer.
- A message is stored faithfully or not at all: ``payload_size()`` finds the
  field the database cannot hold, for enqueue to raise ``PayloadError``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ..leafkinds.anymail_requests import PAYLOAD_KIND

#: NUL and lone surrogates (a valid pair is one code point in a Python str).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def storable(value: Any) -> Any:
    """``value`` with every string in it storable by any supported database;
    the same object when nothing needed changing (the common case)."""
    if isinstance(value, str):
        return _UNSTORABLE.sub(_escape, value) if _UNSTORABLE.search(value) else value
    if isinstance(value, Mapping):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def payload_size(payload: Mapping[str, Any], *, nul: bool) -> tuple[int, str | None]:
    """Bytes the payload takes as compact JSON (what ``max_payload_bytes``
    measures), and the first field a database cannot store (``None`` if all
    can). ``nul``: whether the database stores NUL in text and JSON.

    One serialisation on the usual path; the payload is walked only when the
    text shows a problem.
    """
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except (ValueError, UnicodeEncodeError):  # NaN/Infinity, a lone surrogate
        return 0, _first_problem(payload, nul=nul)
    # JSON writes NUL as \u0000; the walk tells a real NUL from a "\\u0000" text.
    if not nul and "\\u0000" in text:
        return size, _first_problem(payload, nul=nul)
    return size, None


def _first_problem(payload: Mapping[str, Any], *, nul: bool) -> str | None:
    for where, value in _leaves(payload, ""):
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where} is {value!r}, which JSON cannot hold"
        if isinstance(value, str):
            if not nul and "\x00" in value:
                return f"{where} contains a NUL character (\\x00), which this database cannot store"
            surrogate = re.search("[\ud800-\udfff]", value)
            if surrogate is not None:
                return (
                    f"{where} contains a lone surrogate ({_escape(surrogate)}), "
                    "which is not text UTF-8 can encode"
                )
    return None


def _leaves(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every key and scalar in a payload, named as the message's fields are:
    ``subject``, ``to[0]``, ``headers['X-Tag']``, ``metadata['order']``."""
    if isinstance(value, Mapping):
        if where in ("", PAYLOAD_KIND):
            # The payload's own layout: its keys are the message's fields.
            for key, item in value.items():
                yield from _leaves(item, key)
            return
        if len(value) == 1 and next(iter(value)).startswith("$"):
            # A tagged value ({"$tuple": [...]}) stands for its content.
            yield from _leaves(next(iter(value.values())), where)
            return
        for key, item in value.items():
            yield f"{where} key {key!r}", key
            yield from _leaves(item, f"{where}[{key!r}]")
    elif isinstance(value, list):
        if where == "headers":
            for name, header in value:
                yield f"header name {name!r}", name
                yield from _leaves(header, f"headers[{name!r}]")
            return
        for index, item in enumerate(value):
            yield from _leaves(item, f"{where}[{index}]")
    else:
        yield where, value
