"""Sharp edges a new user hit (issue #7), each fixed for its whole class of input."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import django
import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import mailrouter
from mailrouter.checks import check_health_cache, check_mailrouter
from mailrouter.compat import HAS_MAILERS
from mailrouter.errors import DeliveryError
from mailrouter.health.store import MailerHealth, store_for
from mailrouter.matching import domain_of, normalise_domain
from mailrouter.outcomes import MessageStatus
from mailrouter.testing.settings import ROUTER, router_settings

from .conftest import LOCMEM, examples, make_router
from .messages import kinds, msg

LEAVES = {alias: {"BACKEND": LOCMEM} for alias in ("a", "b", "c")}


# -- 1. a pin or connection leading back into a router ------------------------------------

NESTED = {
    **LEAVES,
    "eu": {"BACKEND": ROUTER, "OPTIONS": {"routes": [{"mailers": ["a", "b"]}]}},
    # Routes back to "default" for .fr: a loop only for such messages.
    "loopy": {
        "BACKEND": ROUTER,
        "OPTIONS": {"routes": [{"name": "fr", "when": {"to_domain": "*.fr"},
                                "mailers": ["default"]}, {"mailers": ["c"]}]},
    },
}


@pytest.mark.skipif(not HAS_MAILERS, reason="only MAILERS gives the router an alias to pin")
def test_a_pin_to_the_router_itself_fails_at_once_with_one_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with router_settings(NESTED, {"routes": [{"mailers": ["a"]}]}, style="mailers"):
        router = make_router()
        looping, plain = msg(mailers=["default"]), msg()
        with (
            caplog.at_level(logging.WARNING, logger="mailrouter"),
            pytest.raises(DeliveryError) as raised,
        ):
            router.send_messages([looping, plain])
        assert plain.sent_using == "a"  # type: ignore[attr-defined]
        assert looping.mailrouter_status is MessageStatus.FAILED  # type: ignore[attr-defined]
        assert looping.mailrouter_attempts == []  # type: ignore[attr-defined]
        (failure,) = raised.value.failures
        assert "'default' is a router already routing this message" in str(failure.reason)
        assert str(raised.value).count("DeliveryError") == 0  # not nested
        assert len(caplog.records) == 1  # one line, not hundreds
        settings = router.config.health_settings
        on_record = store_for(settings).read(["default"], settings.policy, settings.clock())
        assert on_record["default"] == MailerHealth("default")  # routers are not tracked


def test_a_legacy_connection_leading_back_fails_at_once() -> None:
    """Sent through a nested router with ``connection`` = the legacy router,
    whose routes lead back to that nested router."""
    from mailrouter.pool import build_mailer

    mailers = {**LEAVES, "inner": {"BACKEND": ROUTER, "OPTIONS": {"routes": [{"mailers": "a"}]}}}
    with router_settings(mailers, {"routes": [{"mailers": ["inner"]}]}, style="legacy"):
        from django.core.mail import get_connection

        outer = get_connection()
        inner = build_mailer("inner", outer.mailer_table)
        message = msg()
        state = message.__dict__
        state["_connection" if "_connection" in state else "connection"] = outer
        with pytest.raises(DeliveryError) as raised:
            inner.send_messages([message])
    assert message.mailrouter_attempts == []  # type: ignore[attr-defined]
    assert "inner → MAILROUTER → inner" in str(raised.value.failures[0].reason)


def test_a_pin_to_a_nested_router_works_and_the_router_is_not_health_tracked(
    configure: Any,
) -> None:
    router = configure(NESTED, {"routes": [{"mailers": ["c"]}],
                                "health": {"failure_threshold": 1}})
    pinned = msg(mailers=["eu"])
    assert router.send_messages([pinned]) == 1
    # sent_using is always a leaf; the way through the nested router is in the attempt.
    assert pinned.sent_using == "a"  # type: ignore[attr-defined]
    [attempt] = pinned.mailrouter_attempts  # type: ignore[attr-defined]
    assert (attempt.alias, attempt.via, attempt.leaf) == ("eu", ("a",), "a")
    assert "eu → a: accepted" in attempt.describe()
    explanation = router.explain(msg(mailers=["eu"]))
    assert [(c.alias, c.health) for c in explanation.candidates] == [("eu", "untracked")]


@pytest.mark.skipif(not HAS_MAILERS, reason="'loopy' routes to 'default', a MAILERS alias")
def test_a_nested_router_leading_back_fails_before_anything_is_sent() -> None:
    with router_settings(NESTED, {"routes": [{"mailers": ["c"]}]}, style="mailers"):
        _nested_router_leading_back(make_router())


def _nested_router_leading_back(router: Any) -> None:
    fine = msg(to="x@example.com", mailers=["loopy"])
    looping = msg(to="x@paris.fr", mailers=["loopy"])
    with pytest.raises(DeliveryError) as raised:
        router.send_messages([fine, looping])
    assert fine.sent_using == "c"  # type: ignore[attr-defined]
    assert looping.mailrouter_status is MessageStatus.FAILED  # type: ignore[attr-defined]
    assert looping.mailrouter_attempts == []  # type: ignore[attr-defined]
    assert "default → loopy → default" in str(raised.value.failures[0].reason)


def test_legacy_message_send_through_nested_routers_keeps_working(configure: Any) -> None:
    """Django < 6.1's message.send() sets message.connection to the router;
    the nested router must not send it back there."""
    router = configure(NESTED, {"routes": [{"mailers": ["eu"]}]})
    message = msg()
    state = message.__dict__
    state["_connection" if "_connection" in state else "connection"] = router
    assert router.send_messages([message]) == 1
    assert message.sent_using == "a"  # type: ignore[attr-defined]
    assert [a.via for a in message.mailrouter_attempts] == [("a",)]  # type: ignore[attr-defined]


# -- 2. an invalid `when` reports only the real error ----------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        {"to_dommain": ["*.de"]},
        {"to_domain": ["[de"]},
        ["to_domain"],
        {},
        {"to_domain": ["@firma.de"]},
        {"to_domain": [42]},
        {"metadata": ["kind"]},
        {"headers": {"X-A": 1}},
        {"callable": "no.such.module.f"},
        {"callable": "django.conf.settings"},
        {"callable": "tests.test_sharp_edges.takes_two"},
    ],
)
def test_an_invalid_when_is_reported_once_as_what_it_is(when: Any) -> None:
    options = {"routes": [{"name": "bad", "when": when, "mailers": ["a"]}, {"mailers": ["b"]}]}
    with router_settings(LEAVES, options):
        with pytest.raises(ImproperlyConfigured) as raised:
            make_router()
        found = [m.msg for m in check_mailrouter() if m.level >= checks.ERROR]
    assert len(found) == 1 and "route 'bad'" in found[0], found
    assert "put the catch-all route last" not in str(raised.value)


def takes_two(message: EmailMessage, other: Any) -> bool:
    return True


def test_a_matcher_that_cannot_take_the_message_is_a_startup_error() -> None:
    options = {"routes": [{"when": {"callable": "tests.test_sharp_edges.takes_two"},
                           "mailers": ["a"]}, {"mailers": ["b"]}]}
    with router_settings(LEAVES, options), pytest.raises(ImproperlyConfigured, match="f\\(message"):
        make_router()


# -- 3./4. one spelling per domain, addresses read as Django sends them ------------------------


def django_sent_address(address: str) -> str:
    """The envelope address Django's SMTP backend sends for ``address``."""
    from django.core.mail.backends.smtp import EmailBackend

    if django.VERSION >= (6, 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "create backends through mail.mailers"
            backend = EmailBackend()
        return str(backend.prep_address(address, force_ascii=True))
    from django.core.mail.message import sanitize_address

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in 6.0, still what it sends with
        sent = sanitize_address(address, "utf-8")
    return sent.rpartition("<")[2].rstrip(">")


SPELLINGS = ["bücher.de", "BÜCHER.DE", "xn--bcher-kva.de", "XN--BCHER-KVA.DE", "Bücher.De."]


@pytest.mark.parametrize("pattern", [*SPELLINGS, "*.xn--bcher-kva.de", "*.bücher.de"])
@pytest.mark.parametrize("domain", SPELLINGS)
def test_a_domain_routes_the_same_however_it_is_spelt(
    configure: Any, pattern: str, domain: str
) -> None:
    router = configure(LEAVES, {"routes": [
        {"name": "idn", "when": {"to_domain": pattern, "from_domain": pattern}, "mailers": "a"},
        {"mailers": ["b"]},
    ]})
    host = domain.rstrip(".")
    if pattern.startswith("*."):
        host = f"shop.{host}"
    message = msg(to=f"user@{host}", from_email=f"Shop <shop@{host}>")
    router.send_messages([message])
    assert message.sent_using == "a", (pattern, host)  # type: ignore[attr-defined]


NAMES = st.sampled_from(["", "Ann", '"Doe, Ann"', "Jörg", '"a@b.de"', "Ann B. Smith", "A <"])
COMMENTS = st.sampled_from(["", " (work)", " (x@evil.com)", " (nested (comment))"])
DOMAINS = st.sampled_from(["x.de", "Bücher.DE", "xn--bcher-kva.at", "mail.example.COM"])


@hypothesis_settings(max_examples=examples(60), deadline=None)
@given(name=NAMES, comment=COMMENTS, local=st.sampled_from(["ann", "A.nn+tag"]), domain=DOMAINS)
def test_every_matcher_reads_the_domain_django_sends_to(
    name: str, comment: str, local: str, domain: str
) -> None:
    address = f"{name} <{local}@{domain}>{comment}" if name else f"{local}@{domain}{comment}"
    try:
        sent = django_sent_address(address)
    except ValueError:
        return  # Django would refuse to send it; nothing to route
    assert domain_of(address) == normalise_domain(sent.rpartition("@")[2])


ADDRESS_TEXT = st.text(alphabet='aZ.+-_ö@<>"(),;:[] \\', min_size=1, max_size=24)


def fast_path_addresses() -> st.SearchStrategy[str]:
    from mailrouter.matching import _SIMPLE_ADDRESS

    return st.from_regex(_SIMPLE_ADDRESS)


@hypothesis_settings(max_examples=examples(100), deadline=None)
@given(text=ADDRESS_TEXT | fast_path_addresses())
def test_the_fast_path_reads_addresses_as_the_header_parser_does(text: str) -> None:
    from mailrouter.matching import _SIMPLE_ADDRESS, _parse_address, _parse_with_header_parser

    if _SIMPLE_ADDRESS.match(text):
        assert _parse_address.__wrapped__(text) == _parse_with_header_parser(text)


def test_an_address_with_a_comment_takes_its_route(configure: Any) -> None:
    router = configure(LEAVES, {"routes": [
        {"name": "eu", "when": {"to_domain": ["*.de"]}, "mailers": ["a"]}, {"mailers": ["b"]},
    ]})
    message = msg(to="Ann <ann@x.de> (work)")
    router.send_messages([message])
    assert message.sent_using == "a"  # type: ignore[attr-defined]


# -- friction ---------------------------------------------------------------------------------


def test_failures_before_any_attempt_name_the_message_id(configure: Any) -> None:
    router = configure(LEAVES, {"routes": [{"when": {"to_domain": "*.de"}, "mailers": ["a"]}]})
    message = msg(to="x@example.com")
    with pytest.raises(DeliveryError) as raised:
        router.send_messages([message])
    assert message.mailrouter_message_id in str(raised.value)
    assert "- ? " not in str(raised.value)


def test_a_message_without_recipients_gets_every_attribute(configure: Any) -> None:
    router = configure(LEAVES, {"routes": [{"mailers": ["a"]}]})
    message = EmailMessage("Hello", "Body", "app@example.com", [])
    assert router.send_messages([message]) == 0
    assert message.sent_using is None  # type: ignore[attr-defined]
    assert message.mailrouter_status is MessageStatus.NO_RECIPIENTS  # type: ignore[attr-defined]
    assert message.mailrouter_route is None  # type: ignore[attr-defined]
    assert message.mailrouter_attempts == []  # type: ignore[attr-defined]


def test_unnamed_routes_are_named_by_position(configure: Any) -> None:
    router = configure(LEAVES, {"routes": [
        {"when": {"to_domain": "*.de"}, "mailers": ["a"]}, {"mailers": ["b"]},
    ]})
    first, second = msg(to="x@y.de"), msg()
    router.send_messages([first, second])
    assert [first.mailrouter_route, second.mailrouter_route] == ["#0", "#1"]  # type: ignore[attr-defined]


def test_log_records_carry_no_redundant_prefix(
    configure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    router = configure(LEAVES, {"routes": [{"when": {"to_domain": "*.de"}, "mailers": ["a"]}]})
    router.fail_silently = True
    with caplog.at_level(logging.DEBUG, logger="mailrouter"):
        router.send_messages([msg(to="x@example.com")])
    assert caplog.records
    assert not any(r.getMessage().startswith("mailrouter") for r in caplog.records)


def test_anymail_errors_are_one_line_with_each_cause_once(configure: Any) -> None:
    from mailrouter.testing.redis import free_port

    port = free_port()  # nothing listens there
    mailgun = {"BACKEND": "anymail.backends.mailgun.EmailBackend",
               "OPTIONS": {"api_key": "key-1", "api_url": f"http://127.0.0.1:{port}/v3/"}}
    router = configure({**LEAVES, "mailgun": mailgun}, {"routes": [{"mailers": ["mailgun", "a"]}]})
    message = msg()
    router.send_messages([message])
    error = message.mailrouter_attempts[0].error  # type: ignore[attr-defined]
    assert kinds(message) == [("mailgun", "not_sent"), ("a", "accepted")]
    assert "\n" not in error and error.startswith("Error posting to http://127.0.0.1")
    assert error.count("Connection refused") == 1, error
    assert "ConnectionRefusedError" in error and "HTTPConnectionPool" not in error


def test_a_misspelt_mailrouter_key_is_an_unknown_key() -> None:
    with router_settings(LEAVES, {"routes": [{"mailers": ["a", "b"]}]}, style="legacy"):
        from django.conf import settings

        settings.MAILROUTER = {"MAILER": LEAVES, "OPTIONS": settings.MAILROUTER["OPTIONS"]}
        with pytest.raises(ImproperlyConfigured) as raised:
            make_router()
        found = [m.msg for m in check_mailrouter()]
    assert str(raised.value) == (
        "MAILROUTER has unknown key 'MAILER' (expected: MAILERS, OPTIONS, OUTBOX)"
    )
    assert found == [str(raised.value)]


def test_a_misspelt_mailrouter_key_is_an_unknown_key_on_every_version() -> None:
    from mailrouter.config import legacy_settings

    with router_settings(LEAVES, {"routes": [{"mailers": ["a"]}]}, style="legacy"):
        from django.conf import settings

        settings.MAILROUTER = {**settings.MAILROUTER, "MAILER": {}}
        with pytest.raises(ImproperlyConfigured, match="unknown key 'MAILER'"):
            legacy_settings()


def test_a_misspelt_health_cache_backend_is_e101_debug_or_not() -> None:
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "health": {"BACKEND": "django.core.cache.backends.redis.RedisCach"},
    }
    options = {"routes": [{"mailers": ["a"]}], "health": {"cache": "health"}}
    for debug in (True, False):
        with router_settings(LEAVES, options, CACHES=caches, DEBUG=debug):
            found = [m for m in check_health_cache() if m.id == "mailrouter.E101"]
        assert len(found) == 1 and "'health'" in found[0].msg and "RedisCach" in found[0].msg


def test_bare_strings_work_where_lists_are_expected(configure: Any) -> None:
    router = configure(LEAVES, {"routes": [
        {"when": {"to_domain": "*.de", "tags": "news"}, "mailers": "a"}, {"mailers": "b"},
    ]})
    message = msg(to="x@y.de")
    message.tags = ["news"]  # type: ignore[attr-defined]
    router.send_messages([message])
    assert message.sent_using == "a"  # type: ignore[attr-defined]


def test_explain_is_a_public_value(configure: Any) -> None:
    router = configure(LEAVES, {"routes": [{"name": "eu", "when": {"to_domain": "*.de"},
                                            "mailers": ["a", "b"]}, {"mailers": ["c"]}]})
    explanation = router.explain(msg(to="x@y.de"))
    assert isinstance(explanation, mailrouter.Explanation)
    assert explanation.route == "eu" and explanation.problem is None
    assert [(c.alias, c.health, c.skip) for c in explanation.candidates] == [
        ("a", "closed", None), ("b", "closed", None)
    ]
    assert explanation.as_dict()["candidates"][0]["alias"] == "a"
    unroutable = router.explain(msg(mailers=["zz"]))
    assert unroutable.route == "(pinned)" and "'zz'" in str(unroutable.problem)


def test_explain_honours_a_legacy_connection_as_sending_would(configure: Any) -> None:
    router = configure(LEAVES, {"routes": [{"mailers": ["a"]}]})
    own, through_router = msg(), msg()
    for message, connection in ((own, make_router_leaf("b")), (through_router, router)):
        state = message.__dict__
        state["_connection" if "_connection" in state else "connection"] = connection
    assert router.explain(own).route == "(connection)"
    assert [(c.alias, c.health) for c in router.explain(own).candidates] == [("b", "untracked")]
    assert router.explain(through_router).route == "#0"


def make_router_leaf(alias: str) -> Any:
    from django.core.mail.backends.locmem import EmailBackend

    backend = EmailBackend()
    backend.alias = alias
    return backend
