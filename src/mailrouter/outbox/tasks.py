"""Deliver the outbox from a task queue: Django's tasks framework
(``django.tasks`` on Django 6.0+, the ``django-tasks`` backport on 5.2).

With the OutboxBackend option ``task_backend`` (a ``TASKS`` alias), every
commit that stored rows enqueues ``deliver_outbox``: a wake-up, not the
message itself. The task drains the rows due now with the same claiming as
``outbox-worker``, so a task delivered twice (or two tasks at once) sends each
row once, and a lost task loses nothing (the rows wait for the next task or
an ``outbox-worker``).
"""

from __future__ import annotations

import logging

from .options import DEFAULT_BATCH, tasks_framework

logger = logging.getLogger("mailrouter.outbox")


def deliver_due_rows(database: str = "default", batch: int = DEFAULT_BATCH) -> dict[str, int]:
    """Deliver every row due now; returns rows per resulting status.
    The body of ``deliver_outbox`` and of the Celery task."""
    from django.db import connections

    from .worker import drain

    try:
        return dict(drain(database, once=True, batch=batch).rows)
    finally:
        # Task workers are long-lived threads: do not keep a connection per task.
        connections[database].close_if_unusable_or_obsolete()


def wake_workers(task_backend: str, database: str) -> None:
    """Enqueue ``deliver_outbox`` on ``task_backend`` (called on commit).
    A queue that refuses the task loses nothing: the rows stay queued."""
    try:
        deliver_outbox.using(backend=task_backend).enqueue(database=database)
    except Exception as error:
        logger.warning(
            "could not enqueue deliver_outbox on task backend %r "
            "(%s); the rows stay queued for the next task or an outbox-worker",
            task_backend, type(error).__name__,
        )


_framework = tasks_framework()
if _framework is not None:

    @_framework.task  # type: ignore[untyped-decorator]
    def deliver_outbox(database: str = "default") -> dict[str, int]:
        """Deliver the outbox rows due now (see ``deliver_due_rows``)."""
        return deliver_due_rows(database)
