"""System checks for the outbox: every OutboxBackend's options at startup, the
app it needs, and whether its database keeps what it commits."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core import checks
from django.db import DatabaseError, connections

from ..errors import ConfigurationError
from .options import configured_outboxes

E_WITHOUT_MAILROUTER = "mailrouter.E112"
W_NOT_DURABLE = "mailrouter.W110"

#: PostgreSQL settings that, when "off", let a committed ``sending`` mark
#: vanish in a database crash: the row is then claimed and sent again.
DURABILITY_SETTINGS = ("synchronous_commit", "fsync")


@checks.register("mailrouter", checks.Tags.compatibility)
def check_outboxes(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    if not apps.is_installed("mailrouter"):
        messages.append(
            checks.Error(
                "'mailrouter.outbox' needs 'mailrouter' in INSTALLED_APPS (the router's "
                "checks and the `manage.py mailrouter` command that runs the outbox workers)",
                hint='Add "mailrouter" to INSTALLED_APPS.',
                id=E_WITHOUT_MAILROUTER,
            )
        )
    try:
        configured_outboxes()
    except ConfigurationError as error:
        messages.extend(checks.Error(problem, id="mailrouter.E110") for problem in error.problems)
    return messages


@checks.register("mailrouter", checks.Tags.database)
def check_durable_commits(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Database checks run for the databases named (``migrate``, ``check
    --database``): they may connect, and a database that cannot be reached is
    not this check's to report."""
    if not databases:
        return []
    try:
        outboxes = configured_outboxes()
    except ConfigurationError:
        return []  # mailrouter.E110 reports it
    messages: list[checks.CheckMessage] = []
    for database in sorted({o.database for o in outboxes} & set(databases)):
        off = _settings_off(database)
        if off:
            names = ", ".join(f"{name}=off" for name in off)
            messages.append(
                checks.Warning(
                    f"the outbox's database {database!r} runs with {names}: a database crash "
                    "can lose committed 'sending' marks, and those messages are then sent "
                    "again (duplicates)",
                    hint="The outbox needs durable commits: set "
                    f"{' and '.join(f'{name} = on' for name in off)} for this database "
                    "(postgresql.conf, ALTER DATABASE/ROLE ... SET, or the connection's "
                    "OPTIONS).",
                    id=W_NOT_DURABLE,
                )
            )
    return messages


def _settings_off(database: str) -> list[str]:
    """The durability settings this PostgreSQL connection runs without (empty
    for other databases, or when they cannot be read)."""
    connection = connections[database]
    if connection.vendor != "postgresql":
        return []
    off: list[str] = []
    try:
        cursor = connection.cursor()
    except Exception:
        return []  # unreachable: nothing to say
    with cursor:
        for name in DURABILITY_SETTINGS:
            try:
                cursor.execute(f"SHOW {name}")
                row = cursor.fetchone()
            except DatabaseError:
                continue  # a setting this role may not read
            if row is not None and str(row[0]).lower() == "off":
                off.append(name)
    return off
