"""The exactly-once invariant, checked message by message against what the
scripted mailers (tests/fakes.py) really received."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from django.core.mail import EmailMessage

from mailrouter.outcomes import MessageStatus, Outcome

from . import fakes


def assert_each_ends_exactly_once(batch: Sequence[EmailMessage], delivery: str) -> None:
    """Every message ended exactly once: accepted by exactly one mailer, or
    rejected / failed / uncertain with its attempts recorded; no mailer got a
    message the router had already seen accepted (or uncertain, at most once)."""
    receptions = Counter(mid for received in fakes.RECEIVED.values() for mid in received)

    for message in batch:
        attempts = message.mailrouter_attempts  # type: ignore[attr-defined]
        status = message.mailrouter_status  # type: ignore[attr-defined]
        kinds = [a.outcome for a in attempts]
        mid = message.mailrouter_message_id
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
        # Once any mailer may have it, the status says so (unless one accepted).
        if Outcome.UNCERTAIN in kinds and status is not MessageStatus.SENT:
            assert status is MessageStatus.UNCERTAIN, kinds
        # Nothing after a rejection; nothing after uncertainty unless at-least-once.
        for kind in kinds[:-1]:
            assert kind is not Outcome.REJECTED
            assert kind is not Outcome.ACCEPTED
            if delivery == "at_most_once":
                assert kind is not Outcome.UNCERTAIN, kinds
        # What the mailers actually got matches what the router recorded.
        for alias in set(fakes.RECEIVED) | set(aliases):
            got = fakes.RECEIVED.get(alias, []).count(mid)
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


def worst_window(times: Sequence[float], length: float) -> int:
    """The most events in any half-open window ``[t, t + length)``: what a
    rate limit of N per ``length`` must keep at or below N."""
    ordered = sorted(times)
    worst = end = 0
    for begin, moment in enumerate(ordered):
        while end < len(ordered) and ordered[end] < moment + length:
            end += 1
        worst = max(worst, end - begin)
    return worst
