"""One shared-state layer: the cache fallback, the registry of per-process
state and its watched settings, ``rate_limits_cache``, and plug-in health
sources (status pages are one; a user's own source skips a mailer the same
way)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.test import override_settings

from mailrouter import ratelimit, testing
from mailrouter.errors import ConfigurationError
from mailrouter.health import sources
from mailrouter.health.sources import Clock, Level, Slot, SourceStore
from mailrouter.health.store import Drain, store_for
from mailrouter.shared_state import registry
from mailrouter.status_pages.record import PageState
from mailrouter.testing.redis import RedisServer
from mailrouter.testing.settings import router_settings

from .conftest import make_router
from .health_fixtures import redis_caches

SCRIPTED = "tests.fakes.ScriptedBackend"
MAILERS = {alias: {"BACKEND": SCRIPTED, "OPTIONS": {"name": alias}} for alias in ("a", "b")}
LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}


def msg(subject: str = "Hi") -> EmailMessage:
    return EmailMessage(subject, "Body", "app@example.com", ["u@example.com"])


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    testing.reset_state()
    yield
    testing.reset_state()


# -- one registry, one set of watched settings --------------------------------------


def test_a_caches_override_rebuilds_the_router_that_read_caches() -> None:
    opts = {"routes": [{"mailers": ["a", "b"]}], "health": {"cache": "health"}}
    with override_settings(CACHES={"default": LOCMEM, "health": LOCMEM}), \
            router_settings(MAILERS, opts):
        make_router()  # validated and cached with its health cache present
        # The cache the router's health lives in is gone: the router must be
        # validated again (and refused), not served from the old settings.
        with override_settings(CACHES={"default": LOCMEM}), \
                pytest.raises(ConfigurationError, match=r"\['cache'\] names 'health'"):
            make_router()


def test_reset_state_forgets_every_per_process_record() -> None:
    opts = {"routes": [{"mailers": ["a", "b"]}]}
    with router_settings(MAILERS, opts):
        router = make_router()
        store = store_for(router.config.health_settings)
        store.set_drain("a", Drain(0.0, None, "maintenance"))
        assert router.explain(msg()).candidates[0].skip is not None
        testing.reset_state()
        assert make_router().explain(msg()).candidates[0].skip is None


def test_every_watched_setting_resets_every_registered_state() -> None:
    calls: list[str] = []
    registry.on_reset("tests.shared_state", lambda: calls.append("reset"))
    try:
        for setting in ("CACHES", "MAILERS", "MAILROUTER", "EMAIL_BACKEND", "ANYMAIL",
                        "ANYMAIL_SES"):
            with override_settings(**{setting: {}}):
                pass
        with override_settings(TIME_ZONE="UTC"):  # not watched
            pass
    finally:
        registry.remove("tests.shared_state")
    assert len(calls) == 12  # each watched setting: on entry and on exit


# -- rate_limits_cache ---------------------------------------------------------------


def test_rate_budgets_live_in_their_own_cache(redis: RedisServer) -> None:
    caches = {**redis_caches(redis), "budgets": redis_caches(redis)["health"], "health": LOCMEM}
    opts = {"routes": [{"mailers": ["a", "b"]}], "rate_limits": {"a": "2/h"}, "max_wait": 0,
            "health": {"cache": "health"}, "rate_limits_cache": "budgets"}
    with override_settings(CACHES=caches), router_settings(MAILERS, opts):
        router = make_router()
        assert router.config.rate_limits_cache == "budgets"
        first = [msg(f"x{i}") for i in range(2)]
        router.send_messages(first)
        ratelimit.reset_storages()  # as another process would start: only Redis knows
        second = [msg("y")]
        make_router().send_messages(second)
    assert [m.sent_using for m in first] == ["a", "a"]  # type: ignore[attr-defined]
    assert second[0].sent_using == "b"  # type: ignore[attr-defined]


def test_rate_limits_cache_defaults_to_the_health_cache() -> None:
    opts = {"routes": [{"mailers": ["a", "b"]}], "health": {"cache": "health"}}
    with override_settings(CACHES={"default": LOCMEM, "health": LOCMEM}), \
            router_settings(MAILERS, opts):
        assert make_router().config.rate_limits_cache == "health"


def test_an_unknown_rate_limits_cache_is_refused_at_startup() -> None:
    opts = {"routes": [{"mailers": ["a", "b"]}], "rate_limits_cache": "nowhere"}
    with router_settings(MAILERS, opts), \
            pytest.raises(ConfigurationError, match="'rate_limits_cache' names 'nowhere'"):
        make_router()


# -- plug-in health sources -------------------------------------------------------------


class MaintenanceWindow:
    """A user's health source: a flag per mailer in the health cache."""

    def __init__(self, aliases: tuple[str, ...]) -> None:
        self.slots: tuple[Slot, ...] = tuple((alias, "maintenance") for alias in aliases)

    def effects(
        self, found: Mapping[Slot, Any], now: float, store: SourceStore, clock: Clock
    ) -> tuple[Mapping[str, str], Mapping[str, str]]:
        skip = {alias: "maintenance window" for (alias, _), value in found.items() if value}
        return skip, {}


def test_a_registered_health_source_skips_its_mailers() -> None:
    sources.register("tests.maintenance", lambda config: MaintenanceWindow(("a", "b")))
    try:
        with router_settings(MAILERS, {"routes": [{"mailers": ["a", "b"]}]}):
            router = make_router()
            store = store_for(router.config.health_settings)
            store.set_value("a", "maintenance", True, None)
            message = msg()
            router.send_messages([message])
    finally:
        sources.unregister("tests.maintenance")
    assert message.sent_using == "b"  # type: ignore[attr-defined]
    [skipped, sent] = message.mailrouter_attempts  # type: ignore[attr-defined]
    assert (skipped.alias, skipped.outcome.value, skipped.error) == (
        "a", "skipped", "maintenance window")
    assert sent.alias == "b"


def test_one_level_scale_for_status_pages_and_health() -> None:
    assert PageState is Level
    assert max([Level.DEGRADED, Level.DOWN, Level.OPERATIONAL]) is Level.DOWN
    assert Level.OPERATIONAL < Level.DEGRADED < Level.DOWN
    assert Level("down") is Level.DOWN and Level.DOWN == "down"
