"""Route selection: matchers, first match wins, pins, legacy connections."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage

from mailrouter.errors import DeliveryError
from mailrouter.outcomes import MessageStatus
from mailrouter.routing import RoutingContext, select

from .conftest import LOCMEM
from .messages import msg

LEAVES = {alias: {"BACKEND": LOCMEM} for alias in ("eu", "bulk", "tx", "fallback", "vip")}


def is_vip(message: EmailMessage) -> bool:
    return "vip" in str(message.subject).lower()


ROUTES: list[dict[str, Any]] = [
    {"name": "vip", "when": {"callable": "tests.test_routing.is_vip"}, "mailers": ["vip"]},
    {"name": "eu", "when": {"to_domain": ["*.de", "*.fr", "eu.example.com"]}, "mailers": ["eu"]},
    {"name": "bulk", "when": {"tags": ["newsletter"]}, "mailers": ["bulk"]},
    {"name": "receipts", "when": {"metadata": {"kind": "receipt", "v": 2}}, "mailers": ["tx"]},
    {"name": "hdr", "when": {"headers": {"X-Stream": "ops"}}, "mailers": ["tx"]},
    {
        "name": "billing",
        "when": {"from_email": ["billing@*"], "from_domain": ["shop.example"]},
        "mailers": ["tx"],
    },
    {"name": "default", "mailers": ["fallback"]},
]


@pytest.mark.parametrize(
    ("message_kwargs", "route", "alias"),
    [
        ({}, "default", "fallback"),
        ({"to": ["a@mail.de"]}, "eu", "eu"),
        ({"to": ["a@MAIL.DE"]}, "eu", "eu"),
        ({"to": ["Ann <a@eu.example.com>"]}, "eu", "eu"),
        ({"to": ["a@x.com"], "cc": ["b@paris.fr"]}, "eu", "eu"),
        ({"to": ["a@x.com"], "bcc": ["b@berlin.de"]}, "eu", "eu"),
        ({"to": ["a@de.com"]}, "default", "fallback"),
        ({"to": ["a@notde"]}, "default", "fallback"),
        ({"tags": ["newsletter", "x"]}, "bulk", "bulk"),
        ({"tags": ["other"]}, "default", "fallback"),
        ({"metadata": {"kind": "receipt", "v": 2, "extra": 1}}, "receipts", "tx"),
        ({"metadata": {"kind": "receipt", "v": 3}}, "default", "fallback"),
        ({"headers": {"x-stream": "ops"}}, "hdr", "tx"),
        ({"headers": {"X-Stream": "OPS"}}, "default", "fallback"),
        ({"from_email": "Billing <billing@shop.example>"}, "billing", "tx"),
        ({"from_email": "billing@other.example"}, "default", "fallback"),
        ({"subject": "VIP offer", "to": ["a@mail.de"]}, "vip", "vip"),
    ],
)
def test_first_matching_route_wins(
    configure: Any, message_kwargs: dict[str, Any], route: str, alias: str
) -> None:
    router = configure(LEAVES, {"routes": ROUTES})
    message = msg(**message_kwargs)
    assert router.send_messages([message]) == 1
    assert (message.mailrouter_route, message.sent_using) == (route, alias)
    assert len(mail.outbox) == 1


def test_pin_replaces_route_candidates(configure: Any) -> None:
    router = configure(LEAVES, {"routes": ROUTES})
    listed, single = msg(to=["a@mail.de"], mailers=["bulk", "tx"]), msg(mailers="vip")
    assert router.send_messages([listed, single]) == 2
    assert (listed.sent_using, listed.mailrouter_route) == ("bulk", "(pinned)")
    assert single.sent_using == "vip"


def test_unknown_pinned_alias_fails_that_message_only(configure: Any) -> None:
    router = configure(LEAVES, {"routes": ROUTES})
    bad, good = msg(mailers=["nope"]), msg()
    with pytest.raises(DeliveryError) as raised:
        router.send_messages([bad, good])
    assert raised.value.sent == 1 and good.sent_using == "fallback"
    (failure,) = raised.value.failures
    assert failure.message is bad and failure.status is MessageStatus.FAILED
    assert "'nope'" in str(raised.value)


def test_no_matching_route_is_a_clear_error_not_a_drop(configure: Any) -> None:
    router = configure(LEAVES, {"routes": [ROUTES[1]]})
    unrouted, routed = msg(to=["x@example.com"]), msg(to=["x@example.de"])
    with pytest.raises(DeliveryError, match="no route matches this message") as raised:
        router.send_messages([unrouted, routed])
    assert routed.sent_using == "eu" and unrouted.sent_using is None
    assert raised.value.failures[0].message is unrouted


def test_a_raising_callable_matcher_is_no_match_logged_once_per_batch(
    configure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    router = configure(
        LEAVES,
        {
            "routes": [
                {
                    "name": "cb",
                    "when": {"callable": "tests.test_routing.explode"},
                    "mailers": ["vip"],
                },
                {"name": "eu", "when": {"to_domain": "*.de"}, "mailers": "eu"},
                {"mailers": ["fallback"]},
            ]
        },
    )
    batch = [msg(), msg(to=["a@x.de"]), msg()]
    with caplog.at_level("ERROR", logger="mailrouter"):
        assert router.send_messages(batch) == 3
    assert [m.sent_using for m in batch] == ["fallback", "eu", "fallback"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        "route 'cb': its matcher raised RuntimeError: boom; the route is treated as not matching"
    ]
    caplog.clear()
    router.send_messages([msg()])
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1  # once per batch


def explode(message: EmailMessage) -> bool:
    raise RuntimeError("boom")


def test_legacy_connection_inside_a_batch_is_honoured(configure: Any) -> None:
    """Django ticket #35864: send_messages() ignores message.connection. We don't."""
    router = configure(LEAVES, {"routes": ROUTES})
    own = mail.backends.locmem.EmailBackend()
    own.alias = "handmade"
    pinned = msg()
    pinned.__dict__["_connection" if "_connection" in pinned.__dict__ else "connection"] = own
    plain = msg()
    assert router.send_messages([pinned, plain]) == 2
    assert pinned.sent_using == "handmade" and pinned.mailrouter_route == "(connection)"
    assert plain.sent_using == "fallback"


def test_connection_that_is_the_router_itself_routes_normally(configure: Any) -> None:
    router = configure(LEAVES, {"routes": ROUTES})
    message = msg(to=["a@x.de"])
    message.__dict__["_connection" if "_connection" in message.__dict__ else "connection"] = router
    assert router.send_messages([message]) == 1
    assert message.sent_using == "eu"


def test_route_selection_is_pure_and_fast_path_has_no_io(configure: Any) -> None:
    router = configure(LEAVES, {"routes": ROUTES})
    message = msg(to=["a@x.fr"])
    # Everything selection may ask beyond message and config comes in as callbacks.
    context = RoutingContext(
        routers=frozenset(),
        path=(router.alias,),
        is_this_router=lambda connection: False,
        nested_config=lambda candidate: None,
        matcher_failed=lambda route, error: None,
    )
    selection = select(message, router.config, router.mailer_table, context)
    assert selection.route == "eu" and [c.alias for c in selection.candidates] == ["eu"]
    assert mail.outbox == []
