"""Signals about outbox rows. Receivers get the row (``row``: an
``OutboxMessage``, its ``attempts`` already redacted) and ``status``.

- ``row_sent``: a mailer accepted the row's message (``row.sent_using``).
- ``row_failed``: the row ended ``rejected`` or ``failed`` (no more retries).
- ``row_uncertain``: a mailer may have the message (an uncertain attempt, or
  the worker delivering it stopped mid-send); it is not sent again.

All are sent with ``sender`` = ``OutboxMessage`` after the row's new status
is committed. A receiver that raises is logged and ignored.
"""

from django.dispatch import Signal

#: A mailer accepted the row's message (``row.sent_using``): ``row``, ``status``.
row_sent = Signal()
#: The row ended ``rejected`` or ``failed`` (no more retries): ``row``, ``status``.
row_failed = Signal()
#: A mailer may have the row's message; it is not sent again: ``row``, ``status``.
row_uncertain = Signal()
