"""Undo a failed attempt's changes to a message before the next attempt.

Backends are allowed to touch the message they send (Anymail sets
``anymail_status``, custom backends add headers). A failed attempt must not
leak such changes into the next mailer's attempt, so the message's attributes
are captured before an attempt and put back after a failure.
"""

from __future__ import annotations

from typing import Any

from django.core.mail import EmailMessage

#: The container types that are copied; every other value is shared. Checked
#: inline before calling ``_clone``: most values are leaves, and a snapshot is
#: taken of every message the router sends.
_CONTAINERS = frozenset({list, dict, set})


def _clone(value: Any) -> Any:
    """Copy mutable containers (recursively); share everything else.

    Leaves such as strings, bytes, tuples and MIME parts are shared: backends
    do not mutate them in place, and deep-copying attachments would be costly.
    """
    kind = type(value)
    if kind is list:
        return [_clone(item) if type(item) in _CONTAINERS else item for item in value]
    if kind is dict:
        return {
            key: _clone(item) if type(item) in _CONTAINERS else item for key, item in value.items()
        }
    if kind is set:
        return set(value)
    return value


class MessageSnapshot:
    """The state of a message's attributes at one moment."""

    __slots__ = ("_state",)

    def __init__(self, message: EmailMessage) -> None:
        self._state = {
            key: _clone(value) if type(value) in _CONTAINERS else value
            for key, value in message.__dict__.items()
        }

    def restore(self, message: EmailMessage) -> None:
        """Put the message back as it was (keeping this snapshot reusable)."""
        state = message.__dict__
        state.clear()
        state.update(
            {
                key: _clone(value) if type(value) in _CONTAINERS else value
                for key, value in self._state.items()
            }
        )
