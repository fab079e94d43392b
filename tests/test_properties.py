"""Invariants over random batches, route tables and fault schedules.

Whatever the mailers do, every message ends exactly once: accepted by exactly
one mailer, or rejected / failed / uncertain with its attempts recorded; and no
mailer ever receives a message the router had already seen accepted or
(by default) uncertain.
"""

from __future__ import annotations

from typing import Any

from django.core.mail import EmailMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter import ratelimit, signals
from mailrouter.errors import DeliveryError
from mailrouter.outcomes import MessageStatus, Outcome
from mailrouter.testing.settings import router_settings

from . import fakes
from .conftest import examples, make_router
from .invariants import assert_each_ends_exactly_once

ALIASES = ("a", "b", "c", "d")
DOMAINS = ("x.de", "y.fr", "z.com")


def mailers(quiet: set[str]) -> dict[str, Any]:
    """The scripted leaves; those in ``quiet`` have ``fail_silently`` in OPTIONS."""
    return {
        alias: {
            "BACKEND": "tests.fakes.ScriptedBackend",
            "OPTIONS": {"name": alias, **({"fail_silently": True} if alias in quiet else {})},
        }
        for alias in ALIASES
    }


def meddle(sender: Any, message: EmailMessage, **kwargs: Any) -> None:
    """An attempt_failed receiver that changes the message: never sent on."""
    message.subject = f"{message.subject} (changed by an observer)"
    message.to = [*message.to, "observer@example.com"]


#: Ways a caller's message can be malformed (None: a good message).
BREAKAGES = (None, "to_none", "to_str", "headers_none")

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
    ).flatmap(
        # Weighted and sticky routes only change who is tried first.
        lambda route: st.sampled_from(["failover", "weighted", "sticky"]).map(
            lambda strategy: {
                **route,
                "strategy": strategy,
                **({"weights": {m: 1 for m in route["mailers"]}} if strategy == "weighted" else {}),
            }
        )
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
        # Mostly good messages, sometimes a malformed one.
        st.one_of(st.none(), st.none(), st.none(), st.sampled_from(BREAKAGES[1:])),
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
    concurrency=st.sampled_from([1, 1, 2, 5]),
    limits=st.one_of(st.just({}), st.dictionaries(st.sampled_from(ALIASES), st.integers(0, 6))),
    quiet=st.sets(st.sampled_from(ALIASES)),
    observer=st.booleans(),
)
def test_every_message_ends_exactly_once(
    route_table: list[dict[str, Any]],
    batch_spec: list[tuple[list[str], list[str] | None, str | None]],
    schedule: dict[str, list[str]],
    delivery: str,
    quiet: set[str],
    observer: bool,
    concurrency: int,
    limits: dict[str, int],
) -> None:
    """Also with leaves that fail silently, an attempt_failed receiver that
    changes the message, and malformed messages in the batch."""
    fakes.reset()
    ratelimit.reset_storages()
    for alias, actions in schedule.items():
        fakes.SCRIPTS[alias].extend(actions)
    batch = []
    originals = {}
    for index, (domains, pin, breakage) in enumerate(batch_spec):
        message = EmailMessage(
            f"m{index}", "body", "app@example.com", [f"u{i}@{d}" for i, d in enumerate(domains)]
        )
        if pin is not None:
            message.mailers = pin  # type: ignore[attr-defined]
        originals[id(message)] = (message.subject, tuple(message.recipients()))
        if breakage == "to_none":
            message.to = None  # type: ignore[assignment]
        elif breakage == "to_str":
            message.to = "u@x.de"  # type: ignore[assignment]
        elif breakage == "headers_none":
            message.extra_headers = None  # type: ignore[assignment]
        batch.append(message)

    # Budgets are per hour: nothing refills during the example (0: no limit).
    rates = {alias: f"{count}/h" for alias, count in limits.items() if count}
    options = {"routes": route_table, "delivery": delivery, "concurrency": concurrency,
               "rate_limits": rates, "max_wait": 0}  # fmt: skip
    if observer:
        signals.attempt_failed.connect(meddle)
    try:
        with router_settings(mailers(quiet), options):
            router = make_router()
            try:
                returned = router.send_messages(batch)
                failures: tuple[Any, ...] = ()
            except DeliveryError as error:
                returned, failures = error.sent, error.failures
    finally:
        signals.attempt_failed.disconnect(meddle)

    malformed = [m for m, spec in zip(batch, batch_spec, strict=True) if spec[2] is not None]
    for message in malformed:
        assert message.mailrouter_status is MessageStatus.FAILED
        assert message.mailrouter_attempts == []
        [failure] = [f for f in failures if f.message is message]
        assert failure.reason and "must be a" in failure.reason
    batch = [m for m in batch if m not in malformed]
    # Every mailer got the message as the caller wrote it.
    for _alias, mid, subject, recipients in fakes.SEEN:
        [message] = [m for m in batch if m.mailrouter_message_id == mid]
        assert (subject, recipients) == originals[id(message)]
    failures = tuple(f for f in failures if f.message not in malformed)
    # Whatever observers did, each message is left as the caller wrote it.
    for message in batch:
        assert (message.subject, tuple(message.recipients())) == originals[id(message)]
        # The Message-ID the send used is no header of the caller's.
        assert "Message-ID" not in message.extra_headers

    sent = [m for m in batch if m.mailrouter_status is MessageStatus.SENT]
    assert returned == len(sent)
    assert [f.message for f in failures] == [m for m in batch if m not in sent]
    assert_each_ends_exactly_once(batch, delivery)
    # No mailer got more requests than its budget; a budget skip made no request.
    for alias, count in limits.items():
        tried = [a for m in batch for a in m.mailrouter_attempts  # type: ignore[attr-defined]
                 if a.alias == alias and a.outcome is not Outcome.SKIPPED]  # fmt: skip
        assert len(tried) <= (count or len(batch) * 4)
