"""System check for ``rate_limits`` (registered from ``MailRouterConfig.ready``).

A rate limit is only fleet-wide when the health cache is Redis; anywhere
else each process has the whole budget, so N processes may send N times the
limit. With ``DEBUG`` off (production) that gets a warning.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.cache import caches

from .config import load_mailer_table, parse_router_options, router_label
from .errors import ConfigurationError
from .ratelimit import redis_client

W_PER_PROCESS = "mailrouter.W105"


@checks.register("mailrouter", checks.Tags.caches)
def check_rate_limit_storage(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.DEBUG:
        return []
    from .checks import router_options

    try:
        table = load_mailer_table()
    except ConfigurationError:
        return []  # reported by mailrouter.E001
    messages: list[checks.CheckMessage] = []
    for alias, options in router_options(table):
        try:
            config = parse_router_options(options, alias=alias, table=table)
        except (ConfigurationError, TypeError, AttributeError):
            continue  # reported by mailrouter.E001
        if not config.rate_limits:
            continue
        cache = config.health_settings.cache
        try:
            shared = cache is not None and redis_client(caches[cache]) is not None
        except Exception:
            shared = False  # an unusable cache is reported by the health checks
        if not shared:
            where = "the embedded default" if cache is None else f"CACHES[{cache!r}]"
            messages.append(
                checks.Warning(
                    f"{router_label(alias, table)}: 'rate_limits' are kept in {where}, which "
                    "is not Redis, so every process has the whole budget of "
                    f"{', '.join(f'{a} {limit.text}' for a, limit in config.rate_limits.items())}",
                    hint="Point health['cache'] at a Redis cache (Django's RedisCache or "
                    f"django-redis); silence {W_PER_PROCESS} if this site runs one process.",
                    id=W_PER_PROCESS,
                )
            )
    return messages
