"""Routing in a user's own test suite: a small Django project
(tests/user_project) runs its tests as a user would, in a subprocess, under
Django's runner (with RoutingTestRunner, and with keep_routing as decorator
and context manager) and under pytest-django. Its settings use MAILERS on
Django 6.1 and EMAIL_BACKEND + MAILROUTER before; its relays do not exist, so
a message that bypassed the LocmemMailer leaves would fail the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "user_project"


def run(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # The import path is given explicitly: the suite passes from a plain checkout.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(PROJECT)])
    result = subprocess.run(
        [sys.executable, *args], cwd=PROJECT, env=env, capture_output=True, text=True,
        encoding="utf-8", timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.mark.parametrize(
    ("args", "tests"),
    [
        (["shop.tests_runner", "--settings=shop.settings_runner"], 4),
        (["shop.tests_decorator"], 6),
    ],
    ids=["RoutingTestRunner", "keep_routing"],
)
def test_django_test_runner(args: list[str], tests: int) -> None:
    output = run("manage.py", "test", *args)
    assert re.search(rf"^Ran {tests} tests? ", output, re.MULTILINE), output
    assert re.search(r"^OK$", output, re.MULTILINE), output


def test_pytest_django() -> None:
    output = run("-m", "pytest", "-c", "pytest.ini", "-q", "pytest_fixture", "pytest_decorator")
    assert re.search(r"\b8 passed\b", output), output
