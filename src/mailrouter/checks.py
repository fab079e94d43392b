"""Django system checks: every configuration problem at startup, not at first send.

Registered from ``MailRouterConfig.ready``. One function per tag:

- ``check_mailrouter`` (compatibility): the mailer table, each router's
  options, and every leaf it routes to (built once, no I/O).
- ``check_health_cache`` (caches): whether the health cache makes breaker state
  fleet-wide. It must be shared by every process and increment atomically.
  Local memory and the dummy cache are per process (or nothing); file and
  database caches are shared but count with get-then-set, so concurrent
  failures are lost. With ``DEBUG`` off (production) such a cache gets a
  warning; the embedded default gets its own id so a single-process deployment
  can silence just that one. A health cache that cannot be created at all (a
  misspelt ``BACKEND``) is an error, ``mailrouter.E101``, whatever ``DEBUG`` is.
- ``check_rate_limit_storage`` (caches): rate limits are only fleet-wide when
  the health cache is Redis; anywhere else each process has the whole budget,
  so N processes may send N times the limit. A warning with ``DEBUG`` off.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.cache import caches

from .compat import uses_mailers_setting
from .config import (
    OUTBOX_BACKEND,
    MailerTable,
    RouterConfig,
    backend_import,
    load_mailer_table,
    parse_router_options,
    router_label,
    router_options,
)
from .errors import ConfigurationError
from .health.store import cache_kind
from .leaves import ROUTER_DECIDES, build_leaves, retries_on_its_own, route_leaves
from .outbox import NOT_INSTALLED
from .ratelimit import redis_client
from .runtime import build_redactor

W_LOCAL = "mailrouter.W101"
W_NONATOMIC = "mailrouter.W102"
W_EMBEDDED = "mailrouter.W103"
W_NO_SOCKET_TIMEOUT = "mailrouter.W104"
W_RATE_PER_PROCESS = "mailrouter.W105"
E_OUTBOX_NOT_INSTALLED = "mailrouter.E111"
W_LEAF_FAIL_SILENTLY = "mailrouter.W003"


@checks.register("mailrouter", checks.Tags.compatibility)
def check_mailrouter(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    try:
        table = load_mailer_table()
    except ConfigurationError as error:
        return [checks.Error(problem, id="mailrouter.E001") for problem in error.problems]
    unimportable = set()
    for alias, spec in table.entries.items():
        problem = backend_import(spec)[1]
        if problem is not None:
            unimportable.add(alias)
            messages.append(
                checks.Error(
                    f"{table.label(alias)}: BACKEND {spec.backend!r} cannot be imported: "
                    f"{problem}",
                    id="mailrouter.E002",
                )
            )
    routed: set[str] = set()
    for router_alias, options in router_options(table):
        label = router_label(router_alias, table)
        if not isinstance(options, Mapping):
            messages.append(checks.Error(f"{label}: OPTIONS must be a dict", id="mailrouter.E001"))
            continue
        try:
            config = parse_router_options(options, alias=router_alias, table=table)
        except ConfigurationError as error:
            messages.extend(checks.Error(p, id="mailrouter.E001") for p in error.problems)
            continue
        if all(route.when is not None for route in config.routes):
            messages.append(
                checks.Warning(
                    f"{label}: no route without 'when'; a message that matches no route "
                    "will fail with a configuration error",
                    hint="Add a last route without 'when' as the catch-all.",
                    id="mailrouter.W001",
                )
            )
        routed.update(alias for alias, _ in route_leaves(config, table))
        redact = build_redactor(table)
        # A leaf whose BACKEND does not import is E002's (one mistake, one error).
        leaves, problems = build_leaves(config, table, redact, skip=unimportable)
        messages.extend(checks.Error(problem, id="mailrouter.E003") for problem in problems)
        if not problems:
            messages.extend(_self_retrying_leaves(leaves, table))
    messages.extend(_quiet_leaves(routed, table))
    return messages


@checks.register("mailrouter", checks.Tags.compatibility)
def check_outbox_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """An OutboxBackend without its app has no table to store messages in."""
    if apps.is_installed("mailrouter.outbox"):
        return []
    try:
        table = load_mailer_table()
    except ConfigurationError:
        return []  # mailrouter.E001 reports it
    places = [
        table.label(alias) for alias, spec in table.entries.items()
        if spec.backend == OUTBOX_BACKEND or alias in table.outboxes
    ]
    if not uses_mailers_setting() and getattr(settings, "EMAIL_BACKEND", "") == OUTBOX_BACKEND:
        places.append("EMAIL_BACKEND")
    return [
        checks.Error(
            f"{place}: {NOT_INSTALLED}",
            hint='Add "mailrouter.outbox" to INSTALLED_APPS, then run manage.py migrate.',
            id=E_OUTBOX_NOT_INSTALLED,
        )
        for place in places
    ]


def _quiet_leaves(routed: set[str], table: MailerTable) -> Iterator[checks.CheckMessage]:
    """Routed leaves whose OPTIONS set fail_silently, once each (the router
    takes the option out: see ``leaves.ROUTER_DECIDES``)."""
    for alias, spec in table.entries.items():
        if alias in routed and ROUTER_DECIDES in spec.options:
            yield checks.Warning(
                f"{table.label(alias)}: OPTIONS {ROUTER_DECIDES!r} is ignored: the router "
                "must see every error of this mailer to fail over, and the router's own "
                "fail_silently decides what reaches the caller",
                hint=f"Remove {ROUTER_DECIDES!r} from this mailer's OPTIONS; pass "
                "fail_silently to send_mail() / send() (or the router) instead.",
                id=W_LEAF_FAIL_SILENTLY,
            )


def _self_retrying_leaves(
    leaves: Mapping[str, Any], table: MailerTable
) -> Iterator[checks.CheckMessage]:
    """Leaves that resend on their own defeat at-most-once delivery."""
    for alias, backend in leaves.items():
        retrying = retries_on_its_own(backend)
        if retrying is not None:
            why, hint = retrying
            yield checks.Warning(f"{table.label(alias)}: {why}", hint=hint, id="mailrouter.W002")


def _valid_routers() -> Iterator[tuple[str | None, RouterConfig, MailerTable]]:
    """Every router whose options parse (the others are mailrouter.E001's to
    report), with its validated config and the mailer table."""
    try:
        table = load_mailer_table()
    except ConfigurationError:
        return
    for alias, options in router_options(table):
        try:
            config = parse_router_options(options, alias=alias, table=table)
        except (ConfigurationError, TypeError, AttributeError):
            continue
        yield alias, config, table


@checks.register("mailrouter", checks.Tags.caches)
def check_health_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for alias, config, table in _valid_routers():
        health = config.health_settings
        if not health.enabled:
            continue
        label = router_label(alias, table)
        if health.cache is not None:
            try:
                kind = cache_kind(caches[health.cache])
            except Exception as error:
                # An error in any setting (a misspelt BACKEND), DEBUG or not.
                messages.append(
                    checks.Error(
                        f"{label}: health['cache'] {health.cache!r} cannot be created: "
                        f"{type(error).__name__}: {error}",
                        hint=f"Check CACHES[{health.cache!r}]['BACKEND'].",
                        id="mailrouter.E101",
                    )
                )
                continue
        if settings.DEBUG:
            continue
        hint = (
            "Point health['cache'] at a CACHES alias using "
            "django.core.cache.backends.redis.RedisCache (or memcached)."
        )
        if health.cache is None:
            messages.append(
                checks.Warning(
                    f"{label}: no health['cache']: circuit-breaker state is kept in "
                    "embedded per-process memory, so each process learns a mailer's "
                    "outage on its own",
                    hint=hint + f" Silence {W_EMBEDDED} if this site runs one process.",
                    id=W_EMBEDDED,
                )
            )
            continue
        backend = settings.CACHES[health.cache].get("BACKEND", "?")
        if kind == "local":
            messages.append(
                checks.Warning(
                    f"{label}: health['cache'] {health.cache!r} ({backend}) is not shared "
                    "across processes; every process keeps its own breakers and drains",
                    hint=hint,
                    id=W_LOCAL,
                )
            )
        elif "redis" in backend.lower() and (problem := socket_timeout_problem(health.cache)):
            messages.append(
                checks.Warning(
                    f"{label}: health['cache'] {health.cache!r} ({backend}): {problem}; "
                    "a Redis that hangs instead of refusing connections delays every send "
                    "and `manage.py mailrouter status` by that long (the router falls "
                    "back to per-process state only when the cache raises)",
                    hint="Add OPTIONS {'socket_connect_timeout': 0.5, 'socket_timeout': 0.5} "
                    "(django-redis: SOCKET_CONNECT_TIMEOUT, SOCKET_TIMEOUT).",
                    id=W_NO_SOCKET_TIMEOUT,
                )
            )
        elif kind == "shared-nonatomic":
            messages.append(
                checks.Warning(
                    f"{label}: health['cache'] {health.cache!r} ({backend}) does not "
                    "increment atomically; concurrent failures can be undercounted",
                    hint=hint,
                    id=W_NONATOMIC,
                )
            )
    return messages


#: Seconds above which a health read is too slow to sit in front of a send.
SLOW_SOCKET_TIMEOUT = 2.0


def socket_timeout_problem(cache_alias: str) -> str | None:
    """What is wrong with a Redis cache's socket timeouts, or None.

    A missing key leaves the installed redis-py's own default in force, read
    from its signature and stated as it is (5 s in redis-py 8; older versions
    had none). ``None`` means "wait
    forever" to redis-py.
    """
    options = settings.CACHES[cache_alias].get("OPTIONS")
    given: dict[str, Any] = {}
    if isinstance(options, dict):
        given = {str(k).lower(): v for k, v in options.items()}
    defaults = _redis_client_defaults()
    problems = []
    for name in ("socket_connect_timeout", "socket_timeout"):
        if name in given:
            value = given[name]
            if value is None:
                problems.append(f"{name} is None (no timeout: waits forever)")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                problems.append(f"{name} is {value!r} (must be a positive number of seconds)")
            elif value > SLOW_SOCKET_TIMEOUT:
                problems.append(f"{name} is {value!r} s")
            continue
        default = defaults.get(name)
        if default is None:
            problems.append(f"{name} is not set (the Redis client's default: no timeout)")
        elif isinstance(default, (int, float)) and default > SLOW_SOCKET_TIMEOUT:
            problems.append(f"{name} is not set (the Redis client's default: {default:g} s)")
    return "; ".join(problems) or None


def _redis_client_defaults() -> dict[str, float | None]:
    """The installed redis-py's default socket timeouts (empty if absent)."""
    try:
        import inspect

        from redis import Redis
    except ImportError:
        return {}
    parameters = inspect.signature(Redis.__init__).parameters
    return {
        name: parameters[name].default
        for name in ("socket_connect_timeout", "socket_timeout")
        if name in parameters
    }


@checks.register("mailrouter", checks.Tags.caches)
def check_rate_limit_storage(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.DEBUG:
        return []
    messages: list[checks.CheckMessage] = []
    for alias, config, table in _valid_routers():
        if not config.rate_limits:
            continue
        cache = config.rate_limits_cache
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
                    hint="Point 'rate_limits_cache' (default: health['cache']) at a Redis cache "
                    f"(Django's RedisCache or django-redis); silence {W_RATE_PER_PROCESS} if "
                    "this site runs one process.",
                    id=W_RATE_PER_PROCESS,
                )
            )
    return messages
