from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "mailrouter.outbox"
    label = "mailrouter_outbox"
    verbose_name = "Mail outbox"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
