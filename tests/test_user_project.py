"""Routing in a user's own test suite: a small Django project
(tests/user_project) runs its tests as a user would, in a subprocess, under
Django's runner (with RoutingTestRunner, and with keep_routing as decorator
and context manager) and under pytest-django. Its settings use MAILERS on
Django 6.1 and EMAIL_BACKEND + MAILROUTER before; its relays do not exist, so
a message that bypassed the LocmemMailer leaves would fail the run.

With the health cache in a real Redis, the project's tests run in both orders
and give the same results, see no drain an operator stored there, and leave
its keys as they were.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailrouter.testing.redis import RedisServer

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "user_project"


def run(*args: str, env_extra: dict[str, str] | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # The import path is given explicitly: the suite passes from a plain checkout.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(PROJECT)])
    env.update(env_extra or {})
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
    assert re.search(r"\b9 passed\b", output), output


ISOLATION_TESTS = {
    "django": ["manage.py", "test", "shop.tests_isolation", "--settings=shop.settings_redis_runner",
               "-v", "2"],
    "pytest": ["-m", "pytest", "-c", "pytest.ini", "--ds=shop.settings_redis", "-v",
               *(f"pytest_isolation/test_isolation.py::{name}" for name in (
                   "TestRoutingStateIsPerTest::test_1_the_breaker_opens_on_primary",
                   "TestRoutingStateIsPerTest::test_2_primary_takes_mail",
                   "test_3_an_operators_drain_is_not_seen",
                   "test_4_shared_state_sees_the_operators_drain"))],
}


def stored(redis: RedisServer) -> dict[bytes, bytes | None]:
    """Every key in the Redis (health records, drains, rate budgets) and its value."""
    client = redis.client()
    return {key: client.get(key) for key in client.keys("*")}


@pytest.mark.parametrize("runner", ["django", "pytest"])
def test_tests_keep_routing_state_to_themselves(redis: RedisServer, runner: str) -> None:
    """Routing state is per test, whatever the order, and never in the real cache."""
    env = {"SHOP_REDIS_URL": redis.url}
    run("manage.py", "mailrouter", "--settings=shop.settings_redis", "drain", "eu_smtp",
        "--reason", "relay maintenance", env_extra=env)
    before = stored(redis)
    assert [key.decode() for key in before] == [":1:mailrouter:health:eu_smtp:drain"]
    args = ISOLATION_TESTS[runner]
    forwards = run(*args, env_extra=env)
    if runner == "django":
        backwards = run(*args, "--reverse", env_extra=env)
    else:
        backwards = run(*args[:-4], *reversed(args[-4:]), env_extra=env)
    for output in (forwards, backwards):
        assert re.search(r"\b4 passed\b|^Ran 4 tests ", output, re.MULTILINE), output
        assert "FAIL" not in output and "ERROR" not in output, output
    ran = [list(dict.fromkeys(re.findall(r"test_(\d)_", out))) for out in (forwards, backwards)]
    assert ran == [["1", "2", "3", "4"], ["4", "3", "2", "1"]], ran
    if runner == "django":
        # The system checks judge the configured Redis, not the tests' memory.
        assert "mailrouter.W10" not in forwards, forwards
        # Each --parallel worker empties the state before each of its tests too.
        parallel = run("manage.py", "test", "shop.tests_isolation", "shop.tests_runner",
                       "--settings=shop.settings_redis_runner", "--parallel", "2",
                       env_extra=env)
        assert re.search(r"^Ran 8 tests .*\n\nOK", parallel, re.MULTILINE), parallel
    assert stored(redis) == before
