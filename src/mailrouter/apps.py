from django.apps import AppConfig


class MailRouterConfig(AppConfig):
    name = "mailrouter"
    verbose_name = "Mail router"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .webhook_logging import install

        install()  # the webhook token stays out of request/access logs
