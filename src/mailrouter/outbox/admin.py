"""The outbox in Django's admin: rows with filters and search, "retry now" and
"cancel" actions. Rows are read-only here: the workers own their state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from . import operations
from .models import OutboxMessage

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[OutboxMessage]
else:  # generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin


@admin.register(OutboxMessage)
class OutboxMessageAdmin(_ModelAdmin):
    list_display = (
        "id", "status", "recipients", "subject", "sent_using", "delivery_count",
        "next_attempt_at", "created_at", "short_error",
    )
    list_filter = ("status", "sent_using", "mailer", "created_at")
    search_fields = ("recipients", "=message_id", "subject")
    ordering = ("-id",)
    date_hierarchy = "created_at"
    actions = ("retry_now", "cancel")
    list_per_page = 100

    @admin.display(description="error")
    def short_error(self, row: OutboxMessage) -> str:
        return row.last_error[:120]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Viewing only; state changes go through the actions.
        return False

    @admin.action(description="Retry now (failed, rejected, uncertain, cancelled, queued)")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = operations.retry(queryset.db, ids=ids)
        skipped = len(ids) - count
        self.message_user(request, f"Queued {count} row(s) for delivery now.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} row(s) left alone: sent, or held by a worker right now.",
                messages.WARNING,
            )

    @admin.action(description="Cancel (queued rows only)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = operations.cancel(queryset.db, ids=ids)
        self.message_user(request, f"Cancelled {count} row(s).", messages.SUCCESS)
        if len(ids) - count:
            self.message_user(
                request, f"{len(ids) - count} row(s) were not queued and were left alone.",
                messages.WARNING,
            )
