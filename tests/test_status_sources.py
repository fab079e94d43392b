"""Status sources read what ESPs publish today: Postmark's Sorry-hosted API (and
its legacy API), other Sorry pages, and AWS's current events for SES.

Documents are the vendor-shaped fixtures of tests/fixtures/status (see its
SOURCES.md) or built by mailrouter.testing.statuspage, served by a real local
HTTP server and fetched for real.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.core.management import call_command

from mailrouter.backend import RouterBackend
from mailrouter.errors import ConfigurationError
from mailrouter.health.store import store_for
from mailrouter.status_pages.aws_health import AwsHealthSource
from mailrouter.status_pages.record import PageRecord, PageState
from mailrouter.status_pages.refresh import read_page, refresh_now
from mailrouter.status_pages.settings import StatusPage
from mailrouter.status_pages.sorry import PostmarkSource, SorrySource
from mailrouter.status_pages.sources import Level, StatusSource, UnexpectedDocument
from mailrouter.testing import FakeESPServer
from mailrouter.testing.statuspage import (
    CURRENT_EVENTS,
    SERVICES,
    SORRY_COMPONENTS,
    SORRY_NOTICES,
    SORRY_STATUS,
    SUMMARY,
    Page,
    StatusPageServer,
    aws_event,
    aws_health,
    notice,
    rehearsal_pages,
    sorry,
    statuspage,
)

from .esp_fixtures import API_KEY, amazon_ses, mailgun
from .health_fixtures import FakeClock

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "status"
GUIDE = ROOT / "docs" / "guides" / "status-pages.md"
LEAVES = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
          for alias in ("postmark", "backup")}


def fixture(name: str, content_type: str = "application/json") -> Page:
    return Page((FIXTURES / name).read_bytes(), content_type=content_type)


POSTMARK_V1 = {SORRY_STATUS: "postmark-v1-status.json",
               SORRY_COMPONENTS: "postmark-v1-components.json",
               SORRY_NOTICES: "postmark-v1-notices.json"}


@pytest.fixture
def server() -> Iterator[StatusPageServer]:
    with StatusPageServer() as running:
        yield running


def serve_postmark_v1(server: StatusPageServer) -> None:
    server.pages.update({path: fixture(name) for path, name in POSTMARK_V1.items()})


def page(server: StatusPageServer, path: str = "", source: StatusSource | None = None,
         components: tuple[str, ...] = (), timeout: float = 2.0) -> StatusPage:
    return StatusPage("postmark", server.url(path), source or PostmarkSource(), components,
                      timeout=timeout, allow_http=True, kind="postmark")


def read(status_page: StatusPage) -> PageRecord:
    return read_page(status_page, None, time.time())


# -- Postmark on Sorry ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["", "/", SORRY_STATUS, SORRY_COMPONENTS, SORRY_NOTICES])
def test_postmark_reads_the_sorry_api_given_the_root_or_any_v1_url(
        server: StatusPageServer, path: str) -> None:
    serve_postmark_v1(server)
    record = read(page(server, path, components=("api", "smtp")))
    # SMTP is operational, its EU relay child is in outage: a child counts for its parent.
    assert (record.state, record.worst) == (PageState.DOWN, "SMTP - Outbound relay (EU): outage")
    assert record.error is None
    # With components: their documents, not the page state; one fetch each.
    assert server.hits == {SORRY_COMPONENTS: 1, SORRY_NOTICES: 1}


def test_postmark_components_by_name_id_and_notices(server: StatusPageServer) -> None:
    serve_postmark_v1(server)
    assert read(page(server, components=("API",))).state is PageState.OPERATIONAL
    assert read(page(server, components=("1",))).worst == "API: operational"  # by id
    # An active unplanned notice naming Inbound makes it at least degraded; the ended
    # notice (API) and the scheduled maintenance (Web App) do not count.
    inbound = read(page(server, components=("inbound",)))
    assert (inbound.state, inbound.worst) == (
        PageState.DEGRADED, "Inbound: unplanned notice 'Delayed inbound processing'")
    assert read(page(server, components=("web app",))).state is PageState.OPERATIONAL
    missing = read(page(server, components=("Transactional",)))
    assert missing.state is PageState.UNKNOWN and "not on the page" in str(missing.error)


def test_without_components_the_page_state_and_every_active_notice_count(
        server: StatusPageServer) -> None:
    server.pages.update(sorry({"API": "operational"}, state="operational", notices=[
        notice("Slow sending"), notice("Old", ended=True)]))
    record = read(page(server))
    assert (record.state, record.worst) == (PageState.DEGRADED, "unplanned notice 'Slow sending'")
    assert server.hits == {SORRY_STATUS: 1, SORRY_NOTICES: 1}
    server.pages.update(sorry({"API": "operational"}, state="outage"))
    assert read(page(server)).worst == "page: outage"
    # A notice naming no components does not count once components are configured.
    server.pages.update(sorry({"API": "operational"}, notices=[notice("Slow sending")]))
    assert read(page(server, components=("API",))).state is PageState.OPERATIONAL


@pytest.mark.parametrize("word, level", [
    ("operational", Level.OPERATIONAL), ("degraded", Level.DEGRADED),
    ("maintenance", Level.DEGRADED), ("partial_outage", Level.DEGRADED),
    ("outage", Level.DOWN),
])
def test_sorry_state_words(word: str, level: Level) -> None:
    document = {"page": {"state": word}, "components": [
        {"id": 7, "name": "SMTP", "state": word, "parent_id": None}], "notices": []}
    assert SorrySource().read(document, []).level is level
    assert SorrySource().read(document, ["smtp"]).level is level


@pytest.mark.parametrize("word", ["major_outage", "Outage", "on_fire", None, 3])
def test_unknown_sorry_words_read_as_unknown_never_down(word: Any) -> None:
    document = {"page": {"state": word}, "notices": []}
    with pytest.raises(UnexpectedDocument, match="unknown status"):
        SorrySource().read(document, [])


@pytest.mark.parametrize("names, level", [
    ({"component_ids": [3]}, Level.DEGRADED),
    ({"components": [3]}, Level.DEGRADED),
    ({"components": [{"name": "smtp"}]}, Level.DEGRADED),
    ({"components": "3"}, Level.OPERATIONAL),  # not a list: names nothing
    ({"component_ids": [4]}, Level.OPERATIONAL),
])
def test_how_a_notice_names_components(names: dict[str, Any], level: Level) -> None:
    document = {"components": [{"id": 3, "name": "SMTP", "state": "operational",
                                "parent_id": None}],
                "notices": [{"type": "unplanned", "ended_at": None, "subject": "x", **names}]}
    assert SorrySource().read(document, ["smtp"]).level is level


def test_planned_notice_counts_while_under_way(server: StatusPageServer) -> None:
    server.pages.update(sorry({"SMTP": "operational"}, notices=[
        notice("Upgrade", "planned", components=[1], state="scheduled")]))
    assert read(page(server, components=("SMTP",))).state is PageState.OPERATIONAL
    server.pages.update(sorry({"SMTP": "operational"}, notices=[
        notice("Upgrade", "planned", components=[1])]))
    record = read(page(server, components=("SMTP",)))
    assert (record.state, record.worst) == (PageState.DEGRADED, "SMTP: planned notice 'Upgrade'")


def test_generic_sorry_kind_shares_the_reader(server: StatusPageServer) -> None:
    server.pages.update(sorry({"Delivery": "operational"}, children={
        "Delivery": {"Delivery EU": "degraded"}}, root="/status"))
    record = read(page(server, "/status", SorrySource(), components=("delivery",)))
    assert (record.state, record.worst) == (PageState.DEGRADED, "Delivery EU: degraded")
    # The generic kind has no legacy fallback: a page without the API is unknown.
    assert read(page(server, "/elsewhere", SorrySource())).state is PageState.UNKNOWN


# -- Postmark's legacy API ---------------------------------------------------------------

def test_root_of_a_page_answering_only_the_legacy_api_falls_back(
        server: StatusPageServer) -> None:
    server.pages[SERVICES] = fixture("postmark-legacy-services.json")
    record = read(page(server, components=("smtp", "api")))  # legacy path slugs
    assert (record.state, record.worst) == (PageState.DEGRADED, "smtp: DELAY")
    assert server.hits[SORRY_COMPONENTS] == 1 and server.hits[SERVICES] == 1
    assert read(page(server, SERVICES, components=("API Response Time",))).state is (
        PageState.OPERATIONAL)


def test_legacy_url_reads_only_the_legacy_api(server: StatusPageServer) -> None:
    serve_postmark_v1(server)
    server.pages[SERVICES] = fixture("postmark-legacy-services.json")
    assert read(page(server, SERVICES)).state is PageState.DEGRADED  # worst service: DELAY
    assert set(server.hits) == {SERVICES}


def test_neither_api_is_unknown_with_both_reasons(server: StatusPageServer) -> None:
    record = read(page(server))
    assert record.state is PageState.UNKNOWN
    assert record.error == "HTTP 404; legacy API: HTTP 404"


def test_one_deadline_covers_every_document_of_a_refresh(server: StatusPageServer) -> None:
    serve_postmark_v1(server)
    for path in (SORRY_COMPONENTS, SORRY_NOTICES):
        server.pages[path].delay = 0.4
    started = time.monotonic()
    record = read(page(server, components=("SMTP",), timeout=0.6))
    elapsed = time.monotonic() - started
    # Each document alone fits in the timeout; both together do not.
    assert record.state is PageState.UNKNOWN and "timed out" in str(record.error)
    assert elapsed < 0.6 + 0.25, elapsed
    assert read(page(server, components=("SMTP",), timeout=2)).state is PageState.DOWN


# -- AWS Health --------------------------------------------------------------------------

def aws_page(server: StatusPageServer, region: str, services: tuple[str, ...] = ("ses",),
             path: str = CURRENT_EVENTS) -> StatusPage:
    return StatusPage("ses", server.url(path), AwsHealthSource(region, services),
                      timeout=2, allow_http=True, kind="aws_health")


def test_aws_fixture_utf16_events_by_region_and_service(server: StatusPageServer) -> None:
    server.pages[CURRENT_EVENTS] = fixture("aws-currentevents-utf16.json",
                                           "application/json;charset=utf-16")
    # The SES event is in us-east-1; the eu-west-1 event is EC2's: both ignored here.
    ireland = read(aws_page(server, "eu-west-1"))
    assert (ireland.state, ireland.worst) == (PageState.OPERATIONAL, "no open event in eu-west-1")
    virginia = read(aws_page(server, "us-east-1"))
    assert virginia.state is PageState.DEGRADED
    assert virginia.worst == ("Amazon Simple Email Service (us-east-1): 3 "
                              "Increased Email Sending Latencies")
    assert read(aws_page(server, "eu-west-1", ("ec2",))).state is PageState.DEGRADED
    by_name = read(aws_page(server, "N. Virginia", ("Amazon Simple Email Service",)))
    assert by_name.state is PageState.DEGRADED


@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le", "utf-8"])
def test_aws_bodies_in_every_encoding(server: StatusPageServer, encoding: str) -> None:
    server.pages[CURRENT_EVENTS] = aws_health([aws_event(region="eu-west-1")], encoding)
    assert read(aws_page(server, "eu-west-1")).state is PageState.DEGRADED
    server.pages[CURRENT_EVENTS] = aws_health([], encoding)
    assert read(aws_page(server, "eu-west-1")).state is PageState.OPERATIONAL


@pytest.mark.parametrize("event, state", [
    ({"service": "ses-eu-west-1", "status": "1"}, PageState.DEGRADED),  # the slug names it
    ({"service": "ses", "region_id": "eu-west-1", "status": "2"}, PageState.DEGRADED),
    ({"service": "sesv2-eu-west-1", "status": "3"}, PageState.OPERATIONAL),  # not "ses"
    ({"service": "ses-us-east-1", "region_name": "Ireland", "status": "3"},
     PageState.OPERATIONAL),  # another region's slug
    ({"service": "ses-eu-west-1", "status": "0"}, PageState.OPERATIONAL),  # resolved
    ({"service": "ses-eu-west-1", "status": "7"}, PageState.UNKNOWN),  # never down
])
def test_aws_event_matching_and_codes(server: StatusPageServer, event: dict[str, Any],
                                      state: PageState) -> None:
    server.pages[CURRENT_EVENTS] = aws_health([event])
    assert read(aws_page(server, "eu-west-1")).state is state


def test_aws_document_that_is_not_a_list_is_unknown(server: StatusPageServer) -> None:
    server.pages[CURRENT_EVENTS] = aws_health([])
    server.pages[CURRENT_EVENTS].body = json.dumps({"events": []}).encode()
    assert read(aws_page(server, "eu-west-1")).state is PageState.UNKNOWN


# -- configuration ------------------------------------------------------------------------

@pytest.mark.parametrize("entry, problem", [
    ({"kind": "aws_health"}, "['region'] is required for kind 'aws_health'"),
    ({"kind": "aws_health", "region": "eu-west-1", "services": []}, "['services'] must be"),
    ({"kind": "aws_health", "region": "eu-west-1", "components": ["SES"]},
     "['components'] does not apply to kind 'aws_health'"),
    ({"url": "https://status.postmarkapp.com", "kind": "postmark", "region": "eu-west-1"},
     "['region'] applies only to kind 'aws_health'"),
    ({"url": "https://status.example.com", "kind": "nope"}, "is not one of 'statuspage'"),
])
def test_bad_page_options_name_the_alias_and_key(
        configure: Callable[..., RouterBackend], entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        configure(LEAVES, {"routes": [{"mailers": ["postmark", "backup"]}],
                           "status_pages": {"postmark": entry}})
    assert problem in str(raised.value) and "['postmark']" in str(raised.value)


def test_aws_health_defaults(configure: Callable[..., RouterBackend]) -> None:
    router = configure(LEAVES, {"routes": [{"mailers": ["postmark", "backup"]}],
                                "status_pages": {"postmark": {"kind": "aws_health",
                                                              "region": "eu-west-1"}}})
    configured = router.config.status_pages["postmark"]
    assert configured.url == "https://health.aws.amazon.com/public/currentevents"
    assert isinstance(configured.source, AwsHealthSource)
    assert configured.source.services == ("ses",) and configured.source.region == "eu-west-1"


# -- through the router and the command ------------------------------------------------

def test_refresh_status_shows_postmark_components_by_name(
        configure: Callable[..., RouterBackend], server: StatusPageServer) -> None:
    serve_postmark_v1(server)
    configure(LEAVES, {
        "routes": [{"mailers": ["postmark", "backup"]}],
        "status_pages": {"postmark": {"url": server.url(), "kind": "postmark",
                                      "components": ["1", "inbound"], "allow_http": True}},
    })
    out = StringIO()
    call_command("mailrouter", "refresh-status", "--json", stdout=out)
    (row,) = json.loads(out.getvalue())["refreshed"]
    # Configured by id and in lower case; shown by the names the page gives them.
    assert row == {"alias": "postmark", "state": "degraded",
                   "worst": "Inbound: unplanned notice 'Delayed inbound processing'",
                   "error": None}
    call_command("mailrouter", "refresh-status", "postmark", stdout=(out := StringIO()))
    assert out.getvalue().strip() == (
        "postmark: degraded (Inbound: unplanned notice 'Delayed inbound processing')")


def test_an_ses_event_in_the_region_moves_ses_behind_and_an_empty_list_puts_it_back(
        configure: Callable[..., RouterBackend], server: StatusPageServer,
        clock: FakeClock) -> None:
    """Anymail's real SES backend (region eu-west-1) against the fake ESP's SES API."""
    server.pages[CURRENT_EVENTS] = aws_health([
        aws_event(region="us-east-1", status="3"), aws_event(region="eu-west-1", status="3")])
    with FakeESPServer(api_key=API_KEY) as ses, FakeESPServer(api_key=API_KEY) as backup:
        router = configure({"ses": amazon_ses(ses), "mailgun": mailgun(backup)}, {
            "routes": [{"mailers": ["ses", "mailgun"]}],
            "health": {"clock": "tests.health_fixtures.CLOCK"},
            "status_pages": {"ses": {"url": server.url(CURRENT_EVENTS), "kind": "aws_health",
                                     "region": "eu-west-1", "allow_http": True}},
        })
        config = router.config
        refresh = lambda: refresh_now(dict(config.status_pages),  # noqa: E731
                                      store_for(config.health_settings), clock)
        assert refresh()["ses"].state is PageState.DEGRADED

        def send() -> EmailMessage:
            message = EmailMessage("s", "b", "app@example.com", ["u@example.com"])
            router.send_messages([message])
            return message

        assert send().sent_using == "mailgun"  # type: ignore[attr-defined]
        assert len(ses.messages) == 0 and len(backup.messages) == 1
        server.pages[CURRENT_EVENTS] = aws_health([])
        assert refresh()["ses"].state is PageState.OPERATIONAL
        assert send().sent_using == "ses"  # type: ignore[attr-defined]
        assert len(ses.messages) == 1


def guide_example(containing: str) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", GUIDE.read_text(), re.M | re.S)
    (found,) = [code for code in blocks if containing in code]
    return str(found)


def test_the_guides_postmark_example_reads_the_current_api(
        configure: Callable[..., RouterBackend], server: StatusPageServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The guide's first example, its hosts swapped for the fake status server."""
    monkeypatch.setenv("MAILROUTER_STATUS_WEBHOOK_TOKEN", "guide-webhook-token-0123456789")
    namespace: dict[str, Any] = {"os": os}
    exec(guide_example('"components": ["api", "smtp"]'), namespace)
    options = namespace["router_options"]
    pages = options["status_pages"]
    assert pages["postmark"]["url"] == "https://status.postmarkapp.com"  # the current API
    for entry in pages.values():
        entry["url"] = re.sub(r"^https://[^/]+", server.url(), entry["url"])
        entry["allow_http"] = True
    server.pages.update(rehearsal_pages())
    server.pages[SUMMARY] = statuspage({"API": "operational", "Outbound Delivery": "operational"})
    leaves = {alias: {"BACKEND": "tests.fakes.ScriptedBackend", "OPTIONS": {"name": alias}}
              for alias in ("mailgun", "postmark", "smtp")}
    configure(leaves, {**options, "health": {}})

    def refresh_status() -> str:
        out = StringIO()
        call_command("mailrouter", "refresh-status", "postmark", stdout=out)
        return out.getvalue().strip()

    assert refresh_status() == "postmark: operational (API: operational)"
    server.pages.update(sorry({"API": "operational", "SMTP": "outage"}))
    assert refresh_status() == "postmark: down (SMTP: outage)"
    assert server.hits[SERVICES] == 0  # the legacy API is never asked
