from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "mailrouter.outbox"
    label = "mailrouter_outbox"
    verbose_name = "Mail outbox"
    default_auto_field = "django.db.models.BigAutoField"
