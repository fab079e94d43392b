"""Undo a failed attempt's changes to a message before the next attempt.

Backends are allowed to touch the message they send (Anymail sets
``anymail_status``, custom backends add headers), and so are receivers of the
router's ``attempt_failed`` signal. A failed attempt must not leak such changes
into the next mailer's attempt, so the message's attributes are captured
before an attempt and put back after a failure (and after its signal).
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping, MutableSequence, MutableSet
from typing import Any

from django.core.mail import EmailMessage

#: Immutable types that are shared without a closer look; checked inline
#: before calling ``_clone``: most values are leaves, and a snapshot is taken of
#: every message the router sends.
_LEAVES = frozenset({str, bytes, int, float, bool, type(None), tuple, frozenset})


def _clone(value: Any) -> Any:
    """Copy mutable containers (recursively); share everything else.

    Leaves such as strings, bytes, tuples and MIME parts are shared: backends
    do not mutate them in place, and deep-copying attachments would be costly.
    Subclasses of the containers (``OrderedDict``, ``defaultdict``, a
    case-insensitive headers dict, ``UserList``) are copied too, keeping their type.
    """
    kind = type(value)
    if kind is list:
        return [_clone(item) if type(item) not in _LEAVES else item for item in value]
    if kind is dict:
        return {
            key: _clone(item) if type(item) not in _LEAVES else item for key, item in value.items()
        }
    if kind is set:
        return set(value)
    if kind in _LEAVES:
        return value
    if isinstance(value, (MutableMapping, MutableSequence, MutableSet)):
        try:
            duplicate = copy.copy(value)
        except Exception:  # an odd container that cannot be copied: share it
            return value
        if duplicate is value:
            return value
        if isinstance(duplicate, MutableMapping):
            for key, item in list(duplicate.items()):
                if type(item) not in _LEAVES:
                    duplicate[key] = _clone(item)
        elif isinstance(duplicate, MutableSequence):
            for index, item in enumerate(duplicate):
                if type(item) not in _LEAVES:
                    duplicate[index] = _clone(item)
        return duplicate
    return value


class MessageSnapshot:
    """The state of a message's attributes at one moment."""

    __slots__ = ("_state",)

    def __init__(self, message: EmailMessage) -> None:
        self._state = {
            key: value if type(value) in _LEAVES else _clone(value)
            for key, value in message.__dict__.items()
        }

    def restore(self, message: EmailMessage) -> None:
        """Put the message back as it was (keeping this snapshot reusable)."""
        state = message.__dict__
        state.clear()
        state.update(
            {
                key: value if type(value) in _LEAVES else _clone(value)
                for key, value in self._state.items()
            }
        )
