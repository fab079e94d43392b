"""The last check before a message's bytes leave: a per-message callable the
router runs immediately before the request, after every hook that runs
before it (Anymail's ``pre_send`` receivers, building the payload, opening
the connection).

The outbox installs one to re-validate its claim on the row at that moment:
a worker paused (or slowed) after its ``sending`` mark, whose row was taken
back meanwhile, must not send. The check raises ``SendAborted`` to withdraw
the message; the router then stops at once (no other candidate is tried) and
``send_messages()`` raises it. Where it runs: for Anymail backends as the
request starts (``http_stage``), for every other leaf just before its
``send_messages()`` (Django's SMTP backend has its connection open by then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_ATTRIBUTE = "_mailrouter_before_send"


def install(message: Any, check: Callable[[], None]) -> None:
    """Run ``check`` before each attempt of ``message`` sends anything."""
    setattr(message, _ATTRIBUTE, check)


def run(message: Any) -> None:
    """Run the message's check, if it has one (raises ``SendAborted``)."""
    check = getattr(message, _ATTRIBUTE, None)
    if check is not None:
        check()
