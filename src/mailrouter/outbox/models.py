"""One row per message stored by ``OutboxBackend``.

A row moves ``queued`` → ``claimed`` (a worker holds it under a lease) →
``sending`` (the worker committed that it is about to hand the message to a
mailer) → ``sent`` / ``rejected`` / ``failed`` / ``uncertain``, or back to
``queued`` for a retry. The ``sending`` mark is committed before any network
I/O: a worker that dies after it leaves a row that becomes ``uncertain`` (the
mailer may have it), never one that is silently sent again.
"""

from __future__ import annotations

from django.db import models


class RowStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    CLAIMED = "claimed", "claimed"
    SENDING = "sending", "sending"
    SENT = "sent", "sent"
    REJECTED = "rejected", "rejected"
    FAILED = "failed", "failed"
    UNCERTAIN = "uncertain", "uncertain"
    CANCELLED = "cancelled", "cancelled"


#: Rows a worker will never touch again on its own.
FINAL_STATUSES = (
    RowStatus.SENT,
    RowStatus.REJECTED,
    RowStatus.FAILED,
    RowStatus.UNCERTAIN,
    RowStatus.CANCELLED,
)


class OutboxMessage(models.Model):
    status = models.CharField(
        max_length=16, choices=RowStatus.choices, default=RowStatus.QUEUED
    )
    #: The OutboxBackend's mailer alias ("" for EMAIL_BACKEND + MAILROUTER):
    #: whose OPTIONS (target mailer, retry policy) apply to this row.
    outbox_alias = models.CharField(max_length=100, blank=True, default="")
    #: The router alias the row is delivered through ("" for MAILROUTER's router).
    mailer = models.CharField(max_length=100, blank=True, default="")
    #: The Message-ID fixed at enqueue (cut to 255 characters here; the payload
    #: holds it whole).
    message_id = models.CharField(max_length=255, db_index=True)
    subject = models.TextField(blank=True, default="")
    #: to, cc and bcc, comma-separated: for the admin's search and list.
    recipients = models.TextField(blank=True, default="")
    #: The message, JSON-encoded by ``mailrouter.outbox.payload``.
    payload = models.JSONField()
    created_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField()
    #: Deliveries started (each may hold several router attempts).
    delivery_count = models.PositiveIntegerField(default=0)
    #: Every router attempt of every delivery: {alias, outcome, error, ...}.
    attempts = models.JSONField(default=list, blank=True)
    last_error = models.TextField(blank=True, default="")
    sent_using = models.CharField(max_length=100, blank=True, default="")
    finished_at = models.DateTimeField(null=True, blank=True)
    #: The worker holding the row (claimed or sending) and until when.
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    #: When the current delivery started (set with the ``sending`` mark).
    delivery_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "outbox message"
        # Every backend Django 5.2+ supports has JSON; declaring it also keeps
        # the system checks from querying the database to find out.
        required_db_features = ["supports_json_field"]
        # Claims and lease checks both filter on status first; one index
        # serves them (each index costs every INSERT in the request).
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="mailrouter_outbox_due"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.status}: {self.subject[:60]}"
