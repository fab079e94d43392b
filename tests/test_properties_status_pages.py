"""Property: status pages never make a message fail untried, and a page we
cannot read ("unknown") routes exactly like an operational one.

Random page states (operational, degraded, down, and unknown in several
ways: HTML, HTTP 500, a missing component) served by a real local HTTP
server, random fault schedules on scripted mailers, random batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.core.mail import EmailMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrouter.backend import RouterBackend
from mailrouter.health import store as health_store
from mailrouter.outcomes import Outcome
from mailrouter.status_pages.refresh import refresh_now

from . import fakes
from .conftest import examples
from .health_fixtures import FakeClock
from .status_server import Page, StatusPageServer, statuspage

ALIASES = ("a", "b", "c")
MAILERS = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
           for alias in ALIASES}
KNOWN = {"operational": "operational", "degraded": "partial_outage", "down": "major_outage"}
UNKNOWN = ("html", "error", "missing")
FAULTS = ("accept", "refuse_connect", "tempfail", "reject", "incompatible", "drop_after_body")


def page(state: str) -> Page:
    if state in KNOWN:
        return statuspage({"Email": KNOWN[state]})
    if state == "html":
        return Page(b"<html>status</html>", content_type="text/html")
    if state == "error":
        return Page(b"{}", status=500)
    return statuspage({"Web": "major_outage"})  # the watched component is missing


@pytest.fixture(scope="module")
def server() -> Iterator[StatusPageServer]:
    with StatusPageServer() as running:
        yield running


@pytest.fixture
def router(configure: Callable[..., RouterBackend], server: StatusPageServer,
           clock: FakeClock) -> RouterBackend:
    pages = {alias: {"url": server.url(f"/{alias}"), "components": ["Email"],
                     "allow_http": True, "timeout": 2} for alias in ALIASES}
    return configure(MAILERS, {
        "routes": [{"mailers": list(ALIASES)}],
        "health": {"failure_threshold": 3, "failure_rate": None, "cooldown": 10,
                   "clock": "tests.health_fixtures.CLOCK"},
        "status_pages": pages,
    })


Trace = list[tuple[str, str, str | None]]
#: Outcomes after which a mailer in rotation can no longer take the message
#: ("skipped": down earlier in this batch; no rate limits here).
LIVE_FAILURES = ("not_sent", "incompatible", "skipped")


def run(router: RouterBackend, server: StatusPageServer, states: dict[str, str],
        scripts: dict[str, list[str]], size: int) -> list[Trace]:
    config = router.config
    store = health_store.store_for(config.health_settings)
    store.forget()  # no breakers or page records from the previous run
    fakes.reset()
    for alias, state in states.items():
        server.pages[f"/{alias}"] = page(state)
    refresh_now(dict(config.status_pages), store, config.health_settings.clock)
    for alias, script in scripts.items():
        fakes.SCRIPTS[alias].extend(script)
    batch = [EmailMessage(f"m{i}", "b", "app@example.com", [f"u{i}@example.com"])
             for i in range(size)]
    router.fail_silently = True
    router.send_messages(batch)
    traces = []
    for message in batch:
        attempts = message.mailrouter_attempts  # type: ignore[attr-defined]
        # Never failed untried because of a page: a message whose every candidate
        # was skipped had some skipped for another reason (failed earlier in the batch).
        if all(a.outcome is Outcome.SKIPPED for a in attempts):
            assert any("status page" not in str(a.error) for a in attempts), attempts
        accepted = [a.alias for a in attempts if a.outcome is Outcome.ACCEPTED]
        assert len(accepted) <= 1
        assert message.sent_using == (accepted[0] if accepted else None)  # type: ignore[attr-defined]
        if message.sent_using is not None:  # type: ignore[attr-defined]
            # Never skipped by a page into a worse mailer... and each message ends once.
            assert fakes.RECEIVED[message.sent_using].count(  # type: ignore[attr-defined]
                message.mailrouter_message_id) == 1
        traces.append([(a.alias, a.outcome.value, a.error_type) for a in attempts])
    return traces


@given(
    states=st.fixed_dictionaries(
        {alias: st.sampled_from([*KNOWN, *UNKNOWN]) for alias in ALIASES}),
    scripts=st.fixed_dictionaries(
        {alias: st.lists(st.sampled_from(FAULTS), max_size=4) for alias in ALIASES}),
    size=st.integers(1, 4),
)
@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_pages_never_fail_a_message_untried_and_unknown_is_operational(
    router: RouterBackend, server: StatusPageServer, states: dict[str, str],
    scripts: dict[str, list[str]], size: int,
) -> None:
    traces = run(router, server, states, scripts, size)
    as_operational = {a: "operational" if s in UNKNOWN else s for a, s in states.items()}
    assert run(router, server, as_operational, scripts, size) == traces
    for trace in traces:
        for index, (alias, outcome, _) in enumerate(trace):
            if outcome != "skipped" and states[alias] == "down":
                # A mailer whose page says down is tried only as the last
                # resort: every candidate in rotation failed for this message first.
                failed = {a for a, o, _ in trace[:index] if o in LIVE_FAILURES}
                assert all(states[a] == "down" or a in failed for a in ALIASES), (states, trace)
        order = [alias for alias, _, _ in trace]
        # Degraded mailers come after the healthy ones.
        ranks = [1 if states[a] == "degraded" else 0 for a in order if states[a] != "down"]
        assert ranks == sorted(ranks), (states, trace)
