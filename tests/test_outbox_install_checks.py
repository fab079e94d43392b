"""The outbox's apps, as a new project gets them wrong: real ``manage.py``
commands (``check``, ``mailrouter status``, ``runserver``) in child processes
report a system-check error naming the missing app, never a traceback.

- ``mailrouter.outbox.OutboxBackend`` configured without ``"mailrouter.outbox"``
  in INSTALLED_APPS: ``mailrouter.E111``, naming the mailer;
- ``"mailrouter.outbox"`` without ``"mailrouter"``: ``mailrouter.E112``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import django
import pytest

from .processes import ROOT, child_env

OUTBOX = "mailrouter.outbox.OutboxBackend"
ROUTER = "mailrouter.backend.RouterBackend"
LEAF = {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}
ROUTES = {"routes": [{"mailers": ["leaf"]}], "health": False}


def settings_text(apps: list[str]) -> str:
    if django.VERSION >= (6, 1):
        mail = (
            f"MAILERS = {{'default': {{'BACKEND': {OUTBOX!r}, 'OPTIONS': {{'mailer': 'router'}}}},"
            f" 'router': {{'BACKEND': {ROUTER!r}, 'OPTIONS': {ROUTES!r}}}, 'leaf': {LEAF!r}}}"
        )
    else:
        mail = (
            f"EMAIL_BACKEND = {OUTBOX!r}\n"
            f"MAILROUTER = {{'MAILERS': {{'leaf': {LEAF!r}}}, 'OPTIONS': {ROUTES!r}}}"
        )
    return (
        "SECRET_KEY = 'install-checks'\n"
        f"INSTALLED_APPS = {['django.contrib.contenttypes', *apps]!r}\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', "
        "'NAME': ':memory:'}}\n"
        "USE_TZ = True\nDEBUG = True\nALLOWED_HOSTS = ['127.0.0.1']\n"
        "ROOT_URLCONF = 'site_settings'\nurlpatterns: list = []\n"
        f"{mail}\n"
    )


def manage(tmp_path: Path, apps: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "site_settings.py").write_text(settings_text(apps))
    env = child_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    env["DJANGO_SETTINGS_MODULE"] = "site_settings"
    return subprocess.run(
        [sys.executable, "-m", "django", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )


COMMANDS = {
    "check": ["check"],
    "status": ["mailrouter", "status"],
    "runserver": ["runserver", "--noreload", "127.0.0.1:0"],
}


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS)
def test_the_outbox_backend_without_its_app_is_a_system_check_error(
    tmp_path: Path, command: list[str]
) -> None:
    result = manage(tmp_path, ["mailrouter"], *command)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output, output
    assert "(mailrouter.E111)" in output, output
    where = "MAILERS['default']" if django.VERSION >= (6, 1) else "EMAIL_BACKEND"
    assert (
        f"{where}: mailrouter.outbox.OutboxBackend needs 'mailrouter.outbox' in INSTALLED_APPS"
    ) in output


def test_the_outbox_app_without_mailrouter_is_a_system_check_error(tmp_path: Path) -> None:
    result = manage(tmp_path, ["mailrouter.outbox"], "check")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output, output
    assert "(mailrouter.E112) 'mailrouter.outbox' needs 'mailrouter' in INSTALLED_APPS" in output


def test_both_apps_pass_the_checks(tmp_path: Path) -> None:
    result = manage(tmp_path, ["mailrouter", "mailrouter.outbox"], "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mailrouter.E11" not in result.stdout + result.stderr
