"""Signals sent by the router. Receivers get redacted data only.

All are sent with ``sender`` = the router's class and ``router`` = the instance.

- ``attempt_failed``: ``alias``, ``message``, ``outcome`` (Outcome), ``error``
  (redacted text), ``attempt`` (Attempt).
- ``message_sent``: ``alias``, ``message``, ``attempts`` (list of Attempt).
- ``message_failed``: ``message``, ``attempts``, ``status`` (MessageStatus:
  rejected, failed or uncertain), ``reason`` (text when no attempt was possible).

A receiver that raises is logged and ignored: observers never change what
happens to a message.
"""

from django.dispatch import Signal

#: A mailer was tried and did not accept the message: ``alias``, ``message``,
#: ``outcome`` (Outcome), ``error`` (redacted text), ``attempt`` (Attempt).
attempt_failed = Signal()
#: A mailer accepted the message: ``alias``, ``message``, ``attempts``.
message_sent = Signal()
#: The message ended without a mailer: ``message``, ``attempts``, ``status``
#: (MessageStatus), ``reason`` (text when no attempt was possible, else None).
message_failed = Signal()

#: A mailer's circuit breaker changed state, once per transition per fleet (as
#: far as the health cache allows). Sent with ``sender`` = the router's class
#: and ``alias``, ``old`` and ``new`` (``mailrouter.health.breaker.State``:
#: closed, open, half_open) and ``reason`` (redacted text).
mailer_state_changed = Signal()

#: A mailer's status page changed state, once per change per fleet (the one
#: process that claims the change sends it). Pages are refreshed in the
#: background, not by a router: ``sender`` is the page's source class
#: (``mailrouter.status_pages.sources.StatuspageSource``, ``PostmarkSource`` or
#: your own), and there is no ``router``. Sent with ``alias``, ``old`` and
#: ``new`` (``mailrouter.health.sources.Level``: operational,
#: degraded, down, unknown) and ``reason`` (the page's host and worst
#: component, or why it is unknown).
mailer_status_changed = Signal()
