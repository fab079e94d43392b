"""The outbox's delivery as a Celery task, for Celery without django.tasks.

``mailrouter.outbox.deliver_outbox`` (a ``shared_task``): schedule it with
Celery beat (e.g. every 10 seconds) and/or call ``deliver_outbox.delay()``;
it drains the rows due now. Delivered twice, or run by two workers at once,
it still sends each row once: rows are claimed, not taken from the message.
"""

from __future__ import annotations

from celery import shared_task

from .tasks import deliver_due_rows


@shared_task(name="mailrouter.outbox.deliver_outbox", ignore_result=False)  # type: ignore[untyped-decorator]
def deliver_outbox(database: str = "default") -> dict[str, int]:
    return deliver_due_rows(database)
