"""Running ``manage.py mailrouter`` in tests: exit code and output as values."""

from __future__ import annotations

from io import StringIO

from django.core.management import CommandError, call_command


def run(*args: str) -> tuple[int, str]:
    """(exit code, stdout) of ``manage.py mailrouter *args``."""
    out = StringIO()
    try:
        call_command("mailrouter", *args, stdout=out, stderr=StringIO())
    except CommandError as error:
        return error.returncode, out.getvalue() + f"\nCommandError: {error}"
    return 0, out.getvalue()
