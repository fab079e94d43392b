"""Nested routers, pins and loops over random tables (issue #7 item 1, #13 item 7).

Routers r1..r3 route to leaves, to routers after them, or back to ``default``
(only reachable through pins, so every table is a valid configuration). Whatever
messages pin, each ends exactly once: accepted by the first pinned candidate,
or — when any pinned candidate would lead back into a router already routing
it — failed at once, before any attempt, with one reason naming that router.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter.compat import HAS_MAILERS
from mailrouter.errors import DeliveryError
from mailrouter.outcomes import MessageStatus
from mailrouter.testing.settings import ROUTER, router_settings

from .conftest import LOCMEM, examples, make_router

pytestmark = pytest.mark.skipif(not HAS_MAILERS, reason="pins name routers by MAILERS alias")

LEAVES = ("a", "b")
ROUTERS = ("r1", "r2", "r3")
DOMAINS = ("x.de", "y.fr", "z.com")


def targets(index: int) -> st.SearchStrategy[str]:
    return st.sampled_from([*LEAVES, *ROUTERS[index + 1:], "default"])


def router_routes(index: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    specific = st.fixed_dictionaries(
        {"when": st.fixed_dictionaries({"to_domain": st.sampled_from(DOMAINS)}),
         "mailers": targets(index)}
    )
    return st.tuples(st.lists(specific, max_size=2), targets(index)).map(
        lambda pair: [*pair[0], {"mailers": pair[1]}]
    )


tables = st.tuples(*(router_routes(i) for i in range(len(ROUTERS))))
pins = st.lists(st.sampled_from([*LEAVES, *ROUTERS, "default"]), min_size=1, max_size=3)
messages = st.lists(st.tuples(st.sampled_from(DOMAINS), st.none() | pins), min_size=1, max_size=6)


def route_of(routes: list[dict[str, Any]], domain: str) -> str:
    for route in routes:
        if "when" not in route or route["when"]["to_domain"] == domain:
            return str(route["mailers"])
    raise AssertionError("every table ends with a catch-all")


def loops(target: str, domain: str, tables: dict[str, list[dict[str, Any]]],
          path: tuple[str, ...]) -> bool:
    """Would handing the message to ``target`` re-enter a router on ``path``?"""
    if target in path:
        return True
    if target not in tables:
        return False
    return loops(route_of(tables[target], domain), domain, tables, (*path, target))


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables, batch=messages)
def test_every_message_ends_once_and_loops_fail_at_once(
    table: tuple[list[dict[str, Any]], ...], batch: list[tuple[str, list[str] | None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    nested = dict(zip(ROUTERS, table, strict=True))
    mailers = {
        **{alias: {"BACKEND": LOCMEM} for alias in LEAVES},
        **{alias: {"BACKEND": ROUTER, "OPTIONS": {"routes": routes, "health": False}}
           for alias, routes in nested.items()},
    }
    with router_settings(mailers, {"routes": [{"mailers": ["a"]}]}, style="mailers"):
        router = make_router()
        router.fail_silently = True
        sent = []
        for domain, pin in batch:
            message = EmailMessage("s", "b", "app@example.com", [f"u@{domain}"])
            if pin is not None:
                message.mailers = pin  # type: ignore[attr-defined]
            sent.append(message)
        mail.outbox = []
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mailrouter"):
            router.send_messages(sent)
        for message, (domain, pin) in zip(sent, batch, strict=True):
            candidates = list(dict.fromkeys(pin or ["a"]))
            copies = [m for m in mail.outbox
                      if m.mailrouter_message_id == message.mailrouter_message_id]
            if any(loops(c, domain, nested, ("default",)) for c in candidates):
                assert message.mailrouter_status is MessageStatus.FAILED  # type: ignore[attr-defined]
                assert message.mailrouter_attempts == []  # type: ignore[attr-defined]
                assert copies == []
            else:
                assert message.mailrouter_status is MessageStatus.SENT  # type: ignore[attr-defined]
                # Always a leaf: the one the first candidate's routes lead to.
                leaf, path = candidates[0], []
                while leaf in nested:
                    path.append(leaf := route_of(nested[leaf], domain))
                assert message.sent_using == leaf  # type: ignore[attr-defined]
                assert message.mailrouter_attempts[-1].via == tuple(path)  # type: ignore[attr-defined]
                assert len(copies) == 1
        # One ERROR line per failed message, nothing else.
        failed = sum(m.mailrouter_status is MessageStatus.FAILED for m in sent)  # type: ignore[attr-defined]
        assert len(caplog.records) == failed


def test_delivery_error_for_a_loop_is_flat() -> None:
    mailers = {"a": {"BACKEND": LOCMEM}}
    with router_settings(mailers, {"routes": [{"mailers": ["a"]}]}, style="mailers"):
        message = EmailMessage("s", "b", "app@example.com", ["u@x.de"])
        message.mailers = "default"  # type: ignore[attr-defined]
        with pytest.raises(DeliveryError) as raised:
            make_router().send_messages([message])
    assert str(raised.value).count("\n") == 1
