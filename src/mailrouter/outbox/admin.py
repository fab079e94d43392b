"""The outbox in Django's admin: rows with filters and search, "retry now",
"queue uncertain rows again" (confirmed) and "cancel" actions. Rows are
read-only here: the workers own their state.

Each row's status cell carries the status the page showed (a hidden input of
the changelist form): "Retry now" moves a row only if it is still in that
state, so a row that became ``uncertain`` after the page was shown stays so."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html

from . import operations
from .models import OutboxMessage, RowStatus

#: Name prefix of the hidden input that carries each row's shown status.
SEEN_PREFIX = "mailrouter-seen-"

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[OutboxMessage]
else:  # generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin


@admin.register(OutboxMessage)
class OutboxMessageAdmin(_ModelAdmin):
    list_display = (
        "id", "shown_status", "recipients", "subject", "sent_using", "delivery_count",
        "next_attempt_at", "created_at", "short_error",
    )
    list_filter = ("status", "sent_using", "mailer", "created_at")
    search_fields = ("recipients", "=message_id", "subject")
    ordering = ("-id",)
    date_hierarchy = "created_at"
    actions = ("retry_now", "retry_uncertain", "cancel")
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

    @admin.display(description="status", ordering="status")
    def shown_status(self, row: OutboxMessage) -> str:
        return format_html('{}<input type="hidden" name="{}{}" value="{}">',
                           row.status, SEEN_PREFIX, row.pk, row.status)

    @admin.action(description="Retry now (failed, rejected, cancelled, queued)")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        seen = {pk: state for pk in ids if (state := request.POST.get(f"{SEEN_PREFIX}{pk}"))}
        result = operations.retry(queryset.db, ids=ids, seen=seen)
        self.message_user(request, f"Queued {result.queued} row(s) for delivery now.",
                          messages.SUCCESS)
        if result.uncertain:
            self.message_user(
                request,
                f"{len(result.uncertain)} uncertain row(s) left alone "
                f"(#{', #'.join(map(str, result.uncertain))}): {operations.UNCERTAIN_WARNING}. "
                "To queue them anyway, use \"Queue uncertain rows again\".",
                messages.WARNING,
            )
        skipped = len(ids) - result.queued - len(result.uncertain)
        if skipped:
            self.message_user(
                request,
                f"{skipped} row(s) left alone: sent, held by a worker, or no longer "
                "in the state shown.",
                messages.WARNING,
            )

    @admin.action(description="Queue uncertain rows again (may deliver a second copy)…")
    def retry_uncertain(
        self, request: HttpRequest, queryset: QuerySet[OutboxMessage]
    ) -> TemplateResponse | None:
        uncertain = queryset.filter(status=RowStatus.UNCERTAIN).order_by("pk")
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Queue uncertain rows again?",
                "opts": self.model._meta,
                "rows": list(uncertain),
                "warning": operations.UNCERTAIN_WARNING,
            }
            return TemplateResponse(
                request, "admin/mailrouter_outbox/retry_uncertain.html", context
            )
        ids = list(queryset.values_list("pk", flat=True))
        count = operations.retry_uncertain(queryset.db, ids=ids)
        self.message_user(request, f"Queued {count} uncertain row(s) for delivery again.",
                          messages.SUCCESS)
        if len(ids) - count:
            self.message_user(request, f"{len(ids) - count} row(s) were no longer uncertain "
                              "and were left alone.", messages.WARNING)
        return None

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
