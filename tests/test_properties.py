"""Invariants over random batches, route tables and fault schedules.

Whatever the mailers do, every message ends exactly once: accepted by exactly
one mailer, or rejected / failed / uncertain with its attempts recorded; and no
mailer ever receives a message the router had already seen accepted or
(by default) uncertain.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.mail import EmailMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter.errors import DeliveryError
from mailrouter.outcomes import MessageStatus, Outcome

from . import fakes
from .conftest import examples, make_router, router_settings

ALIASES = ("a", "b", "c", "d")
DOMAINS = ("x.de", "y.fr", "z.com")
MAILERS = {
    alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
    for alias in ALIASES
}

candidate_lists = st.lists(st.sampled_from(ALIASES), min_size=1, max_size=4, unique=True)
routes = st.lists(
    st.fixed_dictionaries(
        {
            "when": st.fixed_dictionaries(
                {
                    "to_domain": st.lists(
                        st.sampled_from(DOMAINS), min_size=1, max_size=2, unique=True
                    )
                }
            ),
            "mailers": candidate_lists,
        }
    ),
    max_size=3,
).flatmap(
    lambda specific: st.booleans().map(
        lambda catch_all: (
            specific + ([{"mailers": ["a", "b", "c"]}] if catch_all or not specific else [])
        )
    )
)
messages = st.lists(
    st.tuples(
        st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=3),
        st.one_of(st.none(), candidate_lists),
    ),
    min_size=1,
    max_size=12,
)
schedules = st.fixed_dictionaries(
    {alias: st.lists(st.sampled_from(fakes.ACTIONS), max_size=14) for alias in ALIASES}
)


@settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    route_table=routes,
    batch_spec=messages,
    schedule=schedules,
    delivery=st.sampled_from(["at_most_once", "at_least_once"]),
)
def test_every_message_ends_exactly_once(
    route_table: list[dict[str, Any]],
    batch_spec: list[tuple[list[str], list[str] | None]],
    schedule: dict[str, list[str]],
    delivery: str,
) -> None:
    fakes.reset()
    for alias, actions in schedule.items():
        fakes.SCRIPTS[alias].extend(actions)
    batch = []
    for index, (domains, pin) in enumerate(batch_spec):
        message = EmailMessage(
            f"m{index}", "body", "app@example.com", [f"u{i}@{d}" for i, d in enumerate(domains)]
        )
        if pin is not None:
            message.mailers = pin  # type: ignore[attr-defined]
        batch.append(message)

    with router_settings(MAILERS, {"routes": route_table, "delivery": delivery}):
        router = make_router()
        try:
            returned = router.send_messages(batch)
            failures: tuple[Any, ...] = ()
        except DeliveryError as error:
            returned, failures = error.sent, error.failures

    sent = [m for m in batch if m.mailrouter_status is MessageStatus.SENT]
    assert returned == len(sent)
    assert [f.message for f in failures] == [m for m in batch if m not in sent]
    receptions = Counter(mid for received in fakes.RECEIVED.values() for mid in received)

    for message in batch:
        attempts = message.mailrouter_attempts
        status = message.mailrouter_status
        kinds = [a.outcome for a in attempts]
        mid = message.extra_headers.get("Message-ID")
        assert status in set(MessageStatus)
        # Accepted by exactly one mailer, and that is the last attempt.
        assert kinds.count(Outcome.ACCEPTED) == (1 if status is MessageStatus.SENT else 0)
        if status is MessageStatus.SENT:
            assert kinds[-1] is Outcome.ACCEPTED and message.sent_using == attempts[-1].alias
        else:
            assert message.sent_using is None
        # Each mailer at most once per message, in candidate order.
        aliases = [a.alias for a in attempts]
        assert len(aliases) == len(set(aliases))
        # Nothing after a rejection; nothing after uncertainty unless at-least-once.
        for kind in kinds[:-1]:
            assert kind is not Outcome.REJECTED
            assert kind is not Outcome.ACCEPTED
            if delivery == "at_most_once":
                assert kind is not Outcome.UNCERTAIN, kinds
        # What the mailers actually got matches what the router recorded.
        for alias in ALIASES:
            got = fakes.RECEIVED[alias].count(mid)
            recorded = sum(
                1
                for a in attempts
                if a.alias == alias and a.outcome in (Outcome.ACCEPTED, Outcome.UNCERTAIN)
            )
            assert got == recorded
        if delivery == "at_most_once":
            assert receptions[mid] <= 1
        # A failure that had a route has its attempts recorded.
        if status is not MessageStatus.SENT and message.mailrouter_route is not None:
            assert attempts, message.mailrouter_route
