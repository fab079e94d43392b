"""The ``health`` router option is validated at startup, and the health cache is checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from mailrouter.backend import RouterBackend
from mailrouter.checks import check_health_cache, check_mailrouter
from mailrouter.errors import ConfigurationError

MAILERS = {"a": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
           "b": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
              "LOCATION": "redis://127.0.0.1:1/0",
              "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}},
    "redis_no_timeouts": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": "redis://127.0.0.1:1/0"},
    "redis_none_timeouts": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                            "LOCATION": "redis://127.0.0.1:1/0",
                            "OPTIONS": {"socket_connect_timeout": None, "socket_timeout": None}},
    "redis_bad_timeouts": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                           "LOCATION": "redis://127.0.0.1:1/0",
                           "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": "1"}},
    "django_redis": {"BACKEND": "django_redis.cache.RedisCache",
                     "LOCATION": "redis://127.0.0.1:1/0",
                     "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5}},
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache_table"},
    "file": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
             "LOCATION": "/tmp/mailrouter-health-test"},
    "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
}


def options(health: Any) -> dict[str, Any]:
    return {"routes": [{"mailers": ["a", "b"]}], "health": health}


@pytest.mark.parametrize(("health", "expected"), [
    ({"failure_treshold": 3}, "'health' has unknown key 'failure_treshold'"),
    ({"cache": "nope"}, "'health'['cache'] names 'nope', which is not in CACHES"),
    ({"failure_threshold": 0}, "'health'['failure_threshold'] must be an integer ≥ 1"),
    ({"failure_rate": 1.5}, "'health'['failure_rate'] must be a fraction in (0, 1]"),
    ({"cooldown": -1}, "'health'['cooldown'] must be a positive number of seconds"),
    ({"window": "60"}, "'health'['window'] must be a positive number of seconds"),
    ({"cooldown": 60, "max_cooldown": 30}, "'max_cooldown' (30s) is shorter than 'cooldown' (60s)"),
    ({"mailers": {"zzz": {}}}, "'health'['mailers']['zzz']: 'zzz' is not in"),
    ({"mailers": {"a": {"cache": "x"}}}, "'health'['mailers']['a'] has unknown key 'cache'"),
    ({"mailers": {"a": {"cooldown": 0}}}, "'health'['mailers']['a']['cooldown'] must be"),
    ({"clock": "no.such.clock"}, "'health'['clock'] 'no.such.clock' cannot be imported"),
    ("yes", "'health' must be a dict"),
])
def test_bad_health_options_name_the_router_and_the_key(
    configure: Callable[..., RouterBackend], health: Any, expected: str, style: str,
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        configure(MAILERS, options(health), CACHES=CACHES)
    text = str(raised.value)
    assert expected in text
    label = "MAILERS['default']" if style == "mailers" else "MAILROUTER['OPTIONS']"
    assert text.startswith(label)
    assert any(expected in m.msg for m in check_mailrouter() if m.level >= checks.ERROR)


def test_per_mailer_overrides_inherit_the_router_defaults(
    configure: Callable[..., RouterBackend],
) -> None:
    router = configure(MAILERS, options({"cooldown": 5, "failure_threshold": 2,
                                         "mailers": {"b": {"cooldown": 60, "max_cooldown": 900}}}),
                       CACHES=CACHES)
    settings = router.config.health_settings
    assert (settings.policy("a").cooldown, settings.policy("a").failure_threshold) == (5, 2)
    assert (settings.policy("b").cooldown, settings.policy("b").failure_threshold) == (60, 2)
    assert settings.policy("b").max_cooldown == 900


@pytest.mark.parametrize(("cache", "check_id"), [
    (None, "mailrouter.W103"), ("locmem", "mailrouter.W101"), ("dummy", "mailrouter.W101"),
    ("db", "mailrouter.W102"), ("file", "mailrouter.W102"), ("redis", None),
    ("redis_no_timeouts", "mailrouter.W104"), ("django_redis", None),
    ("redis_none_timeouts", "mailrouter.W104"), ("redis_bad_timeouts", "mailrouter.W104"),
])
def test_a_health_cache_that_is_not_shared_and_atomic_gets_a_warning(
    configure: Callable[..., RouterBackend], cache: str | None, check_id: str | None,
) -> None:
    health = {} if cache is None else {"cache": cache}
    configure(MAILERS, options(health), CACHES=CACHES)
    ids = [m.id for m in check_health_cache()]
    assert ids == ([check_id] if check_id else [])
    if check_id:
        assert "health" in check_health_cache()[0].msg
    # Registered with Django's check framework (through the app config).
    assert check_health_cache in checks.registry.registry.get_checks()


def test_no_health_warning_with_debug_or_with_health_off(
    configure: Callable[..., RouterBackend], settings: Any,
) -> None:
    configure(MAILERS, options({"cache": "locmem"}), CACHES=CACHES)
    settings.DEBUG = True
    assert check_health_cache() == []
    settings.DEBUG = False
    configure(MAILERS, options(False), CACHES=CACHES)
    assert check_health_cache() == []


@pytest.mark.parametrize(("cache", "expected"), [
    ("redis_none_timeouts", ["socket_connect_timeout is None (no timeout: waits forever)",
                             "socket_timeout is None"]),
    ("redis_bad_timeouts", ["socket_timeout is '1' (must be a positive number of seconds)"]),
])
def test_w104_checks_the_timeout_values_not_only_the_keys(
    configure: Callable[..., RouterBackend], cache: str, expected: list[str],
) -> None:
    configure(MAILERS, options({"cache": cache}), CACHES=CACHES)
    [warning] = check_health_cache()
    assert all(text in warning.msg for text in expected), warning.msg


def test_w104_states_the_redis_clients_real_default() -> None:
    import inspect

    from redis import Redis

    from mailrouter.checks import socket_timeout_problem

    default = inspect.signature(Redis.__init__).parameters["socket_timeout"].default
    with override_settings(CACHES=CACHES):
        problem = socket_timeout_problem("redis_no_timeouts")
    assert problem is not None
    if default is None:
        assert "no timeout" in problem
    else:  # redis-py 8: 5 s, not "would hang"
        assert f"the Redis client's default: {default:g} s" in problem
