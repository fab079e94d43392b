"""Bad configuration fails at construction and in system checks, naming where."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from mailrouter.checks import check_mailrouter
from mailrouter.compat import HAS_MAILERS
from mailrouter.errors import ConfigurationError
from mailrouter.testing.settings import ROUTER, router_settings

from .conftest import LOCMEM, make_router

LEAVES = {"a": {"BACKEND": LOCMEM}, "b": {"BACKEND": LOCMEM}}
GOOD_ROUTES = [
    {"name": "eu", "when": {"to_domain": ["*.de"]}, "mailers": ["a"]},
    {"mailers": ["b"]},
]


def problems_for(
    options: dict[str, Any], style: str, mailers: dict[str, Any] | None = None
) -> tuple[str, list[str]]:
    """(construction error text, system check messages) for these options."""
    with router_settings(mailers or LEAVES, options, style=style):
        with pytest.raises(ImproperlyConfigured) as raised:
            make_router()
        found = [m.msg for m in check_mailrouter() if m.level >= checks.ERROR]
    return str(raised.value), found


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"routes": GOOD_ROUTES, "retries": 3}, "Unknown options 'retries'"),
        ({"routes": [{"when": {"to_domian": ["*.de"]}, "mailers": ["a"]}]}, "'to_domian'"),
        ({"routes": [{"mailers": ["nope"]}]}, "'nope', which is not in"),
        ({"routes": [{"name": "x", "mailers": []}]}, "route 'x'): 'mailers' must be a non-empty"),
        ({"routes": []}, "'routes' must be a non-empty list"),
        ({}, "'routes' is required"),
        ({"routes": [{"when": {"to_domain": ["user@x.de"]}, "mailers": ["a"]}]}, "contains '@'"),
        ({"routes": [{"when": {"to_domain": ["*.d e"]}, "mailers": ["a"]}]}, "white space"),
        ({"routes": [{"when": {"to_domain": ["[de"]}, "mailers": ["a"]}]}, "unbalanced"),
        ({"routes": [{"when": {"from_email": ["example.com"]}, "mailers": ["a"]}]}, "no '@'"),
        (
            {"routes": [{"when": {"callable": "no.such.module.f"}, "mailers": ["a"]}]},
            "cannot be imported",
        ),
        ({"routes": [{"when": {"tags": []}, "mailers": ["a"]}]}, "'tags' must be a non-empty list"),
        ({"routes": [{"when": {"headers": {"X-A": 1}}, "mailers": ["a"]}]}, "'headers' maps"),
        ({"routes": [{"mailers": ["a"]}, {"mailers": ["b"]}]}, "put the catch-all route last"),
        ({"routes": [{"mailers": ["a", "a"]}]}, "lists an alias twice"),
        ({"routes": [{"mailers": ["a"], "prio": 1}]}, "unknown route key 'prio'"),
        ({"routes": GOOD_ROUTES, "delivery": "exactly_once"}, "'delivery' must be one of"),
        ({"routes": GOOD_ROUTES, "timeout": -1}, "'timeout' must be a positive number"),
        ({"routes": GOOD_ROUTES, "timeouts": {"zz": 3}}, "'timeouts' names 'zz'"),
        (
            {"routes": GOOD_ROUTES, "classifier": "nope.nope"},
            "'classifier' 'nope.nope' cannot be imported",
        ),
    ],
)
def test_bad_options_fail_at_construction_and_in_checks(
    options: dict[str, Any], expected: str, style: str
) -> None:
    text, found = problems_for(options, style)
    assert expected in text
    assert any(expected in message for message in found), found
    where = "MAILERS['default']" if style == "mailers" else "MAILROUTER['OPTIONS']"
    assert where in text


def test_every_problem_is_reported_at_once(style: str) -> None:
    text, found = problems_for(
        {"routes": [{"when": {"to_domian": "x"}, "mailers": ["nope"]}], "bogus": 1}, style
    )
    assert "3 configuration problems" in text
    assert len(found) == 3


@pytest.mark.skipif(not HAS_MAILERS, reason="InvalidMailer exists from Django 6.1")
def test_unknown_options_raise_invalid_mailer_on_django_61() -> None:
    from django.core.mail import InvalidMailer  # type: ignore[attr-defined]

    expected = r"MAILERS\['default'\]: Unknown options 'retries'"
    with (
        router_settings(LEAVES, {"routes": GOOD_ROUTES, "retries": 3}, style="mailers"),
        pytest.raises(InvalidMailer, match=expected),
    ):
        make_router()


def test_route_cycle_is_reported(style: str) -> None:
    mailers = {
        **LEAVES,
        "inner": {"BACKEND": ROUTER, "OPTIONS": {"routes": [{"mailers": ["outer"]}]}},
        "outer": {"BACKEND": ROUTER, "OPTIONS": {"routes": [{"mailers": ["inner"]}]}},
    }
    text, found = problems_for({"routes": [{"mailers": ["outer", "a"]}]}, style, mailers)
    assert "route cycle" in text and "outer → inner → outer" in text
    assert any("route cycle" in message for message in found)


def test_router_naming_itself_is_a_cycle() -> None:
    if not HAS_MAILERS:
        pytest.skip("a router can only name its own alias under MAILERS")
    text, _ = problems_for({"routes": [{"mailers": ["default"]}]}, "mailers")
    assert "route cycle default → default" in text


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ({"timeouts": {"eu": 5, "a": 5}}, "'timeouts' names 'eu', which is a router"),
        (
            {"health": {"mailers": {"eu": {"cooldown": 5}, "a": {"cooldown": 5}}}},
            "'health'['mailers']['eu']: 'eu' is a router",
        ),
    ],
)
def test_a_router_alias_in_leaf_options_fails_at_startup(
    option: dict[str, Any], expected: str, style: str
) -> None:
    """Routers send nothing and are never health-tracked: a leaf option that
    names one is a mistake, reported with the router, the option and the alias."""
    mailers = {
        **LEAVES,
        "eu": {"BACKEND": ROUTER, "OPTIONS": {"routes": [{"mailers": ["a"]}]}},
    }
    options = {"routes": [{"mailers": ["eu", "b"]}], **option}
    text, found = problems_for(options, style, mailers)
    assert expected in text
    assert text.count("is a router") == 1  # the leaf 'a' next to it is accepted
    where = "MAILERS['default']" if style == "mailers" else "MAILROUTER['OPTIONS']"
    assert any(expected in message and where in message for message in found), found


def test_nested_router_without_cycle_is_fine(style: str) -> None:
    mailers = {
        **LEAVES,
        "eu": {"BACKEND": ROUTER, "OPTIONS": {"routes": [{"mailers": ["a", "b"]}]}},
    }
    with router_settings(mailers, {"routes": [{"mailers": ["eu", "b"]}]}, style=style):
        make_router()
        assert [m for m in check_mailrouter() if m.level >= checks.WARNING] == []


def test_leaf_option_errors_surface_in_checks(style: str) -> None:
    mailers = {
        "smtp": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "use_tls": True, "use_ssl": True},
        }
    }
    with router_settings(mailers, {"routes": [{"mailers": ["smtp"]}]}, style=style):
        found = [m for m in check_mailrouter() if m.id == "mailrouter.E003"]
    assert found and "smtp" in found[0].msg


def test_unimportable_leaf_backend_is_reported(style: str) -> None:
    mailers = {"x": {"BACKEND": "no.such.Backend"}}
    with router_settings(mailers, {"routes": [{"mailers": ["x"]}]}, style=style):
        ids = {m.id for m in check_mailrouter()}
    assert "mailrouter.E002" in ids


def test_missing_catch_all_warns(style: str) -> None:
    with router_settings(LEAVES, {"routes": [GOOD_ROUTES[0]]}, style=style):
        make_router()
        ids = [m.id for m in check_mailrouter()]
    assert ids == ["mailrouter.W001"]


def test_configuration_error_is_improperly_configured() -> None:
    assert issubclass(ConfigurationError, ImproperlyConfigured)


def test_leaf_option_errors_fail_at_construction_naming_the_alias(style: str) -> None:
    mailers = {
        **LEAVES,
        "smtp": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": "127.0.0.1",
                "use_tls": True,
                "use_ssl": True,
                "password": "leaf-secret-123",
            },
        },
    }
    text, found = problems_for({"routes": [{"mailers": ["a", "smtp"]}]}, style, mailers)
    label = "MAILERS['smtp']" if style == "mailers" else "MAILROUTER['MAILERS']['smtp']"
    assert f"{label} (used by" in text and "cannot be created" in text
    assert "leaf-secret-123" not in text
    assert any("cannot be created" in message for message in found)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"routes": [{"name": "eu", "mailer": ["a"]}]},
         "routes[0] (route 'eu'): unknown route key 'mailer' (did you mean 'mailers'?)"),
        ({"route": [{"mailers": ["a"]}]}, "Unknown options 'route' (did you mean 'routes'?)"),
    ],
    ids=["route-key", "router-option"],
)
def test_a_misspelt_required_key_is_one_error(
    options: dict[str, Any], expected: str, style: str
) -> None:
    """Reported as the unknown key (with a guess), not also as the key missing."""
    text, found = problems_for(options, style)
    assert len(found) == 1 and expected in found[0], found
    assert expected in text and "required" not in text and "must be a non-empty" not in text


def test_an_unrelated_unknown_key_does_not_hide_a_missing_one(style: str) -> None:
    _, found = problems_for({"routes": [{"name": "eu", "colour": "red"}]}, style)
    assert len(found) == 2, found
    assert "unknown route key 'colour' (expected" in found[0]
    assert "'mailers' must be a non-empty list" in found[1]


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        ("django.core.mail.backends.smtp.EmailBackedn", "ImportError: Module "),
        ("no_such_package.Backend", "ModuleNotFoundError: No module named 'no_such_package'"),
        ("django.core.mail.backends.smtp.ssl", "it is a module, not a backend class"),
    ],
)
def test_a_misspelt_backend_is_one_error_with_its_reason(
    backend: str, reason: str, style: str
) -> None:
    mailers = {**LEAVES, "x": {"BACKEND": backend}}
    with router_settings(mailers, {"routes": [{"mailers": ["x", "a"]}]}, style=style):
        found = [(m.id, m.msg) for m in check_mailrouter() if m.level >= checks.ERROR]
    assert [message_id for message_id, _ in found] == ["mailrouter.E002"], found
    assert f"BACKEND {backend!r} cannot be imported: {reason}" in found[0][1]


def test_the_router_as_email_backend_without_mailrouter_says_so() -> None:
    """Django 5.2/6.0 style with the MAILROUTER setting forgotten."""
    from django.conf import settings
    from django.test.utils import override_settings

    from mailrouter.testing.settings import default_mailer

    with (
        router_settings(LEAVES, {"routes": [{"mailers": ["a"]}]}, style="legacy"),
        override_settings(),
    ):
        del settings.MAILROUTER
        found = [m.msg for m in check_mailrouter() if m.level >= checks.ERROR]
        with pytest.raises(ImproperlyConfigured) as raised:
            default_mailer()
    assert len(found) == 1 and found[0].startswith("the MAILROUTER setting is missing"), found
    assert "'OPTIONS': {'routes': [" in found[0]
    assert "the MAILROUTER setting is missing" in str(raised.value)
    assert "'routes' is required" not in str(raised.value)
