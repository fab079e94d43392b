"""No configured secret reaches any command's output: a secret is planted in
every option that can carry one (an SMTP password, a Mailgun api_key, a
Postmark server token, a query value and the userinfo of a leaf's api_url and
of a status page URL, the webhook token), then every command runs, in text
and ``--json``, in success and in failure, against real servers: local SMTP,
the fake ESP with Anymail's real backends, a real status server, Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.core.mail import EmailMessage

from mailrouter.backend import RouterBackend
from mailrouter.status_pages import refresh
from mailrouter.testing import FakeESPServer, FaultySMTPServer
from mailrouter.testing.redis import RedisServer

from .commands import run
from .health_fixtures import FakeClock, redis_caches
from .status_server import SUMMARY, StatusPageServer, statuspage

PASSWORD = "smtp-pass-PLANTED-1"
API_KEY = "mg-apikey-PLANTED-2"
SERVER_TOKEN = "pm-token-PLANTED-3"
URL_QUERY = "urlquery-PLANTED-4"  # under a name that does not look secret: ?key=
URL_USERINFO = "userinfo-PLANTED-5"
PAGE_QUERY = "pagesig-PLANTED-6"  # ?sig=
PAGE_USERINFO = "pageuser-PLANTED-7"
WEBHOOK_TOKEN = "webhook-token-PLANTED-8"
SECRETS = (PASSWORD, API_KEY, SERVER_TOKEN, URL_QUERY, URL_USERINFO, PAGE_QUERY,
           PAGE_USERINFO, WEBHOOK_TOKEN)
PAGE_PATH = f"{SUMMARY}?sig={PAGE_QUERY}&format=json"


@pytest.fixture
def servers() -> Iterator[tuple[FaultySMTPServer, FakeESPServer, StatusPageServer]]:
    with (FaultySMTPServer(username="app", password=PASSWORD) as smtp,
          FakeESPServer(api_key=API_KEY) as mailgun_esp,
          StatusPageServer() as pages):
        pages.pages[PAGE_PATH] = statuspage({"API": "major_outage"})
        yield smtp, mailgun_esp, pages


@pytest.fixture
def router(configure: Callable[..., RouterBackend], clock: FakeClock, redis: RedisServer,
           servers: tuple[FaultySMTPServer, FakeESPServer, StatusPageServer],
           ) -> Iterator[RouterBackend]:
    smtp, esp, pages = servers
    api_url = esp.mailgun_api_url.replace("http://", f"http://api:{URL_USERINFO}@")
    page_url = pages.url(PAGE_PATH).replace("http://", f"http://{PAGE_USERINFO}@")
    mailers = {
        "smtp": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                 "OPTIONS": {"host": "127.0.0.1", "port": smtp.port, "username": "app",
                             "password": PASSWORD, "timeout": 2}},
        "mailgun": {"BACKEND": "anymail.backends.mailgun.EmailBackend",
                    "OPTIONS": {"api_key": API_KEY, "sender_domain": "mg.example.com",
                                "api_url": f"{api_url}?key={URL_QUERY}", "timeout": 2}},
        "postmark": {"BACKEND": "anymail.backends.postmark.EmailBackend",
                     "OPTIONS": {"server_token": SERVER_TOKEN,
                                 "api_url": esp.postmark_api_url, "timeout": 2}},
    }
    refresh.refresher.forget()
    router = configure(mailers, {
        "routes": [{"mailers": ["mailgun", "postmark", "smtp"]}],
        "health": {"cache": "health", "clock": "tests.health_fixtures.CLOCK",
                   "failure_threshold": 1, "failure_rate": None},
        "status_pages": {"postmark": {"url": page_url, "components": ["API"],
                                      "allow_http": True, "timeout": 1}},
        "status_webhook_token": WEBHOOK_TOKEN,
    }, CACHES=redis_caches(redis))
    yield router
    refresh.refresher.wait_idle(10)


def outputs_of_every_command(router: RouterBackend, label: str) -> list[str]:
    texts = []
    for args in (("status",), ("explain", "--to", "u@example.com"),
                 ("refresh-status",), ("probe", "smtp"), ("probe", "mailgun"),
                 ("probe", "postmark")):
        for json_flag in ((), ("--json",)):
            code, text = run(*args, *json_flag)
            texts.append(f"[{label}] {' '.join(args + json_flag)} -> {code}\n{text}")
    for args in (("drain", "mailgun", "--reason", "maintenance"), ("undrain", "mailgun")):
        texts.append(f"[{label}] {' '.join(args)}\n{run(*args)[1]}")
    return texts


def assert_no_secret(texts: list[str]) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked in:\n{text}"


def test_no_command_prints_a_planted_secret(
    router: RouterBackend, servers: tuple[FaultySMTPServer, FakeESPServer, StatusPageServer],
) -> None:
    smtp, esp, pages = servers
    texts = outputs_of_every_command(router, "healthy")
    joined = "\n".join(texts)
    assert "ok, authenticated" in joined  # the probes really got through
    assert "postmark: down (API: major_outage)" in joined  # and the page was read

    # Failures: every mailer failing a send (errors recorded in health), the
    # ESP and the SMTP server refusing, the status host gone.
    esp.mode = "error_503"
    smtp.mode = "auth_fail"
    router.fail_silently = True
    router.send_messages([EmailMessage("s", "b", "app@example.com", ["u@example.com"])])
    failed = outputs_of_every_command(router, "failing")
    esp.mode = "refuse"
    pages.pages.clear()
    failed += outputs_of_every_command(router, "refused")
    joined = "\n".join(failed)
    assert "failed (not_sent)" in joined and "LAST ERROR" in joined
    assert "Max retries exceeded" in joined or "ConnectionError" in joined
    assert_no_secret(texts + failed)


def test_probe_asks_the_configured_url_without_a_slash_after_its_query(
    router: RouterBackend, servers: tuple[FaultySMTPServer, FakeESPServer, StatusPageServer],
) -> None:
    # Anymail appends "/" to api_url, after the query string when there is one.
    code, text = run("probe", "mailgun", "--json")
    assert code == 0, text
    assert servers[1].account_reads == [f"/v3/domains/mg.example.com?key={URL_QUERY}"]
