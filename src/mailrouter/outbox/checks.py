"""System checks for the outbox: every OutboxBackend's options at startup."""

from __future__ import annotations

from typing import Any

from django.core import checks

from ..errors import ConfigurationError
from .options import configured_outboxes


@checks.register("mailrouter", checks.Tags.compatibility)
def check_outboxes(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        configured_outboxes()
    except ConfigurationError as error:
        return [checks.Error(problem, id="mailrouter.E110") for problem in error.problems]
    return []
