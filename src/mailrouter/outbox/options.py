"""The OutboxBackend's OPTIONS, validated, and its retry policy.

Every problem names the outbox's alias and the option, and is raised when the
backend is constructed (or by the system checks), not when a worker first
reads a row.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from ..compat import uses_mailers_setting
from ..config import OUTBOX_BACKEND, is_router_spec, load_mailer_table
from ..errors import ConfigurationError
from ..shared_state.registry import on_reset

DEFAULT_LEASE = 300.0
DEFAULT_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
#: Worker defaults (``outbox-worker --batch`` / ``--poll-interval``).
DEFAULT_BATCH = 20
DEFAULT_POLL_INTERVAL = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    """When a row that no mailer took is tried again, and when it is given up.

    The n-th retry waits ``backoff * 2**(n-1)`` seconds, at most
    ``max_backoff``, scaled by a random factor in [0.5, 1] so that rows which
    failed together do not all come back together.
    """

    max_attempts: int = 10
    backoff: float = 30.0
    max_backoff: float = 3600.0
    max_age: float = 86400.0

    def gives_up(self, deliveries: int, age: float) -> bool:
        """Whether a row that failed its ``deliveries``-th delivery, ``age``
        seconds after it was stored, ends as failed."""
        return deliveries >= self.max_attempts or age >= self.max_age

    def delay(self, deliveries: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``deliveries``-th failed delivery."""
        base = min(self.max_backoff, self.backoff * 2 ** max(0, deliveries - 1))
        factor: float = (rng or random).uniform(0.5, 1.0)
        return float(base) * factor


@dataclass(frozen=True)
class OutboxOptions:
    #: The OutboxBackend's alias ("" for EMAIL_BACKEND + MAILROUTER['OUTBOX']).
    alias: str
    #: The router the workers deliver through ("" = MAILROUTER's own router).
    mailer: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease: float = DEFAULT_LEASE
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    database: str = "default"
    #: A TASKS alias: each commit that stored rows enqueues ``deliver_outbox`` there.
    task_backend: str | None = None

    @property
    def label(self) -> str:
        return f"MAILERS[{self.alias!r}]" if self.alias else "MAILROUTER['OUTBOX']"


_RETRY_KEYS = {"max_attempts", "backoff", "max_backoff", "max_age"}
_KEYS = {"mailer", "retry", "lease", "max_payload_bytes", "database", "task_backend"}


def _number(value: Any, where: str, problems: list[str], *, integer: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value <= 0:
        kind = "a positive integer" if integer else "a positive number of seconds"
        problems.append(f"{where} must be {kind}, got {value!r}")
        return None
    return value


def _parse_retry(raw: Any, label: str, problems: list[str]) -> RetryPolicy:
    if not isinstance(raw, Mapping):
        problems.append(f"{label}['retry'] must be a dict")
        return RetryPolicy()
    unknown = sorted(set(raw) - _RETRY_KEYS)
    if unknown:
        problems.append(
            f"{label}['retry']: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(_RETRY_KEYS))}"
        )
    values = {
        key: _number(value, f"{label}['retry'][{key!r}]", problems, integer=key == "max_attempts")
        for key, value in raw.items()
        if key in _RETRY_KEYS
    }
    if any(value is None for value in values.values()):
        return RetryPolicy()
    return RetryPolicy(**values)


def parse_options(alias: str, raw: Mapping[str, Any]) -> OutboxOptions:
    """Validate an OutboxBackend's OPTIONS; raises ConfigurationError."""
    label = f"MAILERS[{alias!r}]['OPTIONS']" if alias else "MAILROUTER['OUTBOX']"
    problems: list[str] = []
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        problems.append(
            f"{label}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(_KEYS))}"
        )
    mailer = raw.get("mailer", "")
    table = load_mailer_table()
    if not isinstance(mailer, str):
        problems.append(f"{label}['mailer'] must be a mailer alias (a string)")
        mailer = ""
    elif mailer:
        if mailer not in table:
            problems.append(
                f"{label}['mailer']: {mailer!r} is not defined in {table.source}"
            )
        elif not is_router_spec(table[mailer]):
            problems.append(
                f"{label}['mailer']: {mailer!r} must be a mailrouter.backend.RouterBackend "
                "(the outbox uses the router's outcomes to decide what to retry)"
            )
    elif uses_mailers_setting():
        problems.append(f"{label}['mailer'] is required: the alias of the router to send through")
    # Without MAILERS, no 'mailer' means the router MAILROUTER['OPTIONS'] configures.
    retry = _parse_retry(raw.get("retry", {}), label, problems)
    lease = _number(raw.get("lease", DEFAULT_LEASE), f"{label}['lease']", problems)
    max_bytes = _number(
        raw.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES),
        f"{label}['max_payload_bytes']", problems, integer=True,
    )
    database = raw.get("database", "default")
    if database not in settings.DATABASES:
        problems.append(f"{label}['database']: {database!r} is not in DATABASES")
    task_backend = raw.get("task_backend")
    if task_backend is not None:
        problem = _task_backend_problem(task_backend)
        if problem:
            problems.append(f"{label}['task_backend']: {problem}")
    if problems:
        raise ConfigurationError(problems)
    return OutboxOptions(
        alias=alias,
        mailer=mailer,
        retry=retry,
        lease=float(lease),
        max_payload_bytes=int(max_bytes),
        database=database,
        task_backend=task_backend,
    )


def tasks_framework() -> Any:
    """``django.tasks``, else the ``django_tasks`` backport, else None."""
    try:
        import django.tasks as framework
    except ImportError:
        try:
            import django_tasks as framework  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            return None
    return framework


def _task_backend_problem(alias: Any) -> str | None:
    if not isinstance(alias, str):
        return f"must be a TASKS alias (a string), got {alias!r}"
    framework = tasks_framework()
    if framework is None:
        return "Django's tasks framework is missing (Django 6.0+, or pip install django-tasks)"
    try:
        framework.task_backends[alias]
    except Exception as error:
        return f"{alias!r} is not a usable TASKS backend ({type(error).__name__}: {error})"
    return None


def legacy_raw_options() -> Mapping[str, Any]:
    value = getattr(settings, "MAILROUTER", None) or {}
    raw = value.get("OUTBOX", {}) if isinstance(value, Mapping) else {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(["MAILROUTER['OUTBOX'] must be a dict"])
    return raw


_cache: dict[tuple[str, str], OutboxOptions] = {}


def cached_options(alias: str, raw: Mapping[str, Any]) -> OutboxOptions:
    """``parse_options`` once per distinct settings (Django builds a backend
    for nearly every send_mail())."""
    key = (alias, repr(sorted(raw.items(), key=lambda item: str(item[0]))))
    options = _cache.get(key)
    if options is None:
        options = _cache[key] = parse_options(alias, raw)
    return options


def _clear_cache() -> None:
    _cache.clear()


on_reset("mailrouter.outbox.options", _clear_cache)


def options_for(alias: str) -> OutboxOptions:
    """The validated options of the outbox a row was stored by."""
    if alias:
        table = load_mailer_table()
        if alias not in table:
            raise ConfigurationError(
                [f"outbox {alias!r} is not defined in {table.source} any more"]
            )
        return cached_options(alias, table[alias].options)
    return cached_options("", legacy_raw_options())


def configured_outboxes() -> list[OutboxOptions]:
    """Every OutboxBackend the settings define (MAILERS entries, or
    EMAIL_BACKEND + MAILROUTER['OUTBOX'])."""
    found = []
    table = load_mailer_table()
    for alias, spec in table.entries.items():
        if spec.backend == OUTBOX_BACKEND:
            found.append(options_for(alias))
    if not uses_mailers_setting() and getattr(settings, "EMAIL_BACKEND", "") == OUTBOX_BACKEND:
        found.append(options_for(""))
    return found
