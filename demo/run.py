"""django-mailrouter demo: one batch, five mailers, three faults, no duplicates;
then a circuit breaker skipping a dead mailer and handing traffic back to it.

Run it with ``bash scripts/demo.sh`` (creates .venv-demo and installs the
package), or directly with ``python demo/run.py`` where ``django-mailrouter``
and ``django-anymail[mailgun,postmark]`` are installed. ``--verbose`` also
shows the router's log records.

Everything is local: three SMTP servers and two fake ESP APIs on 127.0.0.1,
driven by Django's SMTP backend and Anymail's real Mailgun and Postmark
backends. The script

1. starts the servers and tells them how to misbehave,
2. configures Django: the router as the default mailer, with an ops route,
   an EU data-residency route, a newsletter route and a default route
   (``MAILERS`` on Django 6.1+, ``EMAIL_BACKEND`` + ``MAILROUTER`` before),
3. sends a mixed batch of 14 messages with one ``send_messages()`` call,
4. prints what happened to each message, and
5. checks it: every message ended as designed, and every server received
   each message at most once, with the Message-ID the router fixed before
   the first attempt,
6. part two: Mailgun's breaker, opened by the batch's failures, is shown by
   ``manage.py mailrouter status``; messages sent one per call skip Mailgun
   without a request; Mailgun recovers, the cooldown passes (the demo moves the
   router's clock 30 s instead of waiting), one probe closes the breaker and
   traffic returns to Mailgun.

Exit status 0 if everything happened as designed, 1 (with the reason) if not.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

try:
    import anymail  # noqa: F401  (the Mailgun and Postmark backends)
    import django
    from django.conf import settings
    from django.core import checks, mail

    from mailrouter.errors import DeliveryError
    from mailrouter.report import elide
    from mailrouter.testing import FakeESPServer, FaultySMTPServer
    from mailrouter.testing.settings import default_mailer, mail_settings, resolve_style
except ImportError as error:  # pragma: no cover - depends on the environment
    sys.exit(
        f"demo: {error}. Run `bash scripts/demo.sh`, or install the package first: "
        "pip install -e '.[anymail]'"
    )

# Fake credentials: the fake ESPs check them, the router redacts them.
MAILGUN_KEY = "key-demo-0000-not-a-real-secret"
POSTMARK_TOKEN = "pm-demo-0000-not-a-real-token"
SERVER_EMAIL = "alerts@shop.example"
INVALID_MAILBOX = "no-such-user@*"


# ---------------------------------------------------------------------------
# 1. Local servers and their faults
# ---------------------------------------------------------------------------


@dataclass
class Servers:
    eu_smtp: FaultySMTPServer
    eu_backup: FaultySMTPServer
    smtp: FaultySMTPServer
    mailgun: FakeESPServer  # one fake API per ESP, so each can fail on its own
    postmark: FakeESPServer
    faults: dict[str, str] = field(default_factory=dict)

    def by_alias(self) -> dict[str, FaultySMTPServer | FakeESPServer]:
        return {
            "eu_smtp": self.eu_smtp,
            "eu_backup": self.eu_backup,
            "smtp": self.smtp,
            "mailgun": self.mailgun,
            "postmark": self.postmark,
        }

    def stop(self) -> None:
        for server in self.by_alias().values():
            server.stop()


def start_servers() -> Servers:
    # Every SMTP server knows the same mailboxes: an invalid one is refused
    # everywhere (550), so there is no point in trying another mailer.
    smtp_servers = [FaultySMTPServer(reject_recipients=[INVALID_MAILBOX]) for _ in range(3)]
    servers = Servers(
        *smtp_servers,
        mailgun=FakeESPServer(api_key=MAILGUN_KEY),
        postmark=FakeESPServer(api_key=POSTMARK_TOKEN),
    )
    for server in servers.by_alias().values():
        server.start()

    # The EU relay serves 3 transactions, then goes down (connections refused).
    servers.eu_smtp.accept_n_then(3, "refuse")
    # Mailgun accepts 3 messages, then answers 503 Service Unavailable.
    servers.mailgun.accept_n_then(3, "error_503")
    # Postmark reads its 2nd request and never answers (the client times out:
    # Postmark may or may not have the message).
    servers.postmark.schedule = ["ok", "read_timeout"]

    servers.faults = {
        "eu_smtp": "serves 3 transactions, then refuses connections",
        "mailgun": "accepts 3 messages, then answers HTTP 503",
        "postmark": "2nd request: reads it, never answers (read timeout)",
    }
    return servers


# ---------------------------------------------------------------------------
# 2. Django configuration
# ---------------------------------------------------------------------------



def leaf_mailers(servers: Servers) -> dict[str, dict[str, object]]:
    def smtp(server: FaultySMTPServer) -> dict[str, object]:
        return {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": server.host, "port": server.port},
        }

    return {
        "eu_smtp": smtp(servers.eu_smtp),
        "eu_backup": smtp(servers.eu_backup),
        "smtp": smtp(servers.smtp),
        "mailgun": {
            "BACKEND": "anymail.backends.mailgun.EmailBackend",
            "OPTIONS": {
                "api_key": MAILGUN_KEY,
                "sender_domain": "mg.shop.example",
                "api_url": servers.mailgun.mailgun_api_url,
            },
        },
        "postmark": {
            "BACKEND": "anymail.backends.postmark.EmailBackend",
            "OPTIONS": {
                "server_token": POSTMARK_TOKEN,
                "api_url": servers.postmark.postmark_api_url,
            },
        },
    }


ROUTER_OPTIONS = {
    "routes": [
        # Admin and error mail (Django sends it from SERVER_EMAIL) stays on
        # the company's own relay.
        {"name": "ops", "when": {"from_email": [SERVER_EMAIL]}, "mailers": ["smtp"]},
        # Data residency: if ANY recipient is in Germany or France, the
        # message goes through EU-hosted relays only.
        {
            "name": "eu",
            "when": {"to_domain": ["*.de", "*.fr"]},
            "mailers": ["eu_smtp", "eu_backup"],
        },
        # Marketing mail only through the bulk account, never spilling into
        # the transactional providers' reputation.
        {"name": "newsletter", "when": {"tags": ["newsletter"]}, "mailers": ["mailgun"]},
        # Everything else: Mailgun, then Postmark, then the own relay.
        {"name": "default", "mailers": ["mailgun", "postmark", "smtp"]},
    ],
    # Small timeouts keep the demo fast; production values are seconds.
    "timeout": 3.0,
    "timeouts": {"postmark": 0.5},
    # Circuit breakers: 3 failures in a row take a mailer out of rotation for
    # 30 s, then one probe decides. The demo's clock lets it skip the 30 s.
    "health": {"failure_threshold": 3, "cooldown": 30, "clock": "__main__.CLOCK"},
}


class DemoClock:
    """Wall-clock time, plus however far the demo has skipped ahead."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.time() + self.skipped


CLOCK = DemoClock()


def configure_django(servers: Servers, *, verbose: bool) -> str:
    """Configure Django as a project's settings.py would; return the style used."""
    common: dict[str, object] = {
        "INSTALLED_APPS": ["mailrouter"],
        "DEFAULT_FROM_EMAIL": "Shop <shop@shop.example>",
        "SERVER_EMAIL": SERVER_EMAIL,
        # One process: mailer health kept in this process's memory is all it
        # needs (a fleet of workers would share it through Redis instead).
        "SILENCED_SYSTEM_CHECKS": ["mailrouter.W103"],
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
            "loggers": {
                "mailrouter": {
                    "handlers": ["stderr"] if verbose else [],
                    "level": "DEBUG",
                    "propagate": False,
                }
            },
        },
    }
    # Django 6.1+: MAILERS, where the router is the "default" mailer and its
    # OPTIONS route to the other mailers by alias. Django 5.2 / 6.0: the same
    # two dicts in one MAILROUTER setting, and EMAIL_BACKEND = the router.
    style = resolve_style("auto")
    mailers = leaf_mailers(servers)
    settings.configure(**mail_settings(mailers, ROUTER_OPTIONS, style=style), **common)
    django.setup()
    if style == "mailers":
        return "MAILERS (Django 6.1+)"
    return "EMAIL_BACKEND + MAILROUTER (Django < 6.1)"


# ---------------------------------------------------------------------------
# 3. The batch, and what must happen to each message
# ---------------------------------------------------------------------------


@dataclass
class Case:
    subject: str
    to: list[str]
    #: Attempts the router must make, in order: "alias:outcome → ...".
    expect: str
    cc: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    from_email: str | None = None
    #: Per-message pin: replaces the route's mailers for this message.
    pin: list[str] | None = None

    def message(self) -> mail.EmailMessage:
        message = mail.EmailMessage(
            self.subject, f"Hello,\n\n{self.subject}.\n", self.from_email, self.to, cc=self.cc
        )
        if self.tags:
            message.tags = self.tags  # Anymail's attribute
        if self.pin:
            message.mailers = self.pin
        return message


NEWSLETTER = "Spring sale: 20% off"

# In sending order: the faults above trigger part-way through the batch.
BATCH = [
    Case("Order #1001 confirmed", ["alice@example.com"], "mailgun:accepted"),
    Case("Bestellung #1002 bestätigt", ["jonas@example.de"], "eu_smtp:accepted"),
    Case(NEWSLETTER, ["bob@example.com"], "mailgun:accepted", tags=["newsletter"]),
    Case("Commande #1003 expédiée", ["no-such-user@example.fr"], "eu_smtp:rejected"),
    Case("[web-2] Disk 91% full", ["admin@shop.example"], "smtp:accepted", from_email=SERVER_EMAIL),
    Case("Password reset", ["dana@example.com"], "postmark:accepted", pin=["postmark"]),
    Case("Commande #1004 confirmée", ["camille@example.fr"], "eu_smtp:accepted"),
    Case("Order #1005 confirmed", ["erin@example.com"], "mailgun:accepted"),
    # eu_smtp is down from here on; Mailgun answers 503 from here on.
    Case("Rechnung #1006", ["lena@example.de"], "eu_smtp:not_sent → eu_backup:accepted"),
    Case("Order #1007 confirmed", ["frank@example.com"], "mailgun:not_sent → postmark:uncertain"),
    Case(NEWSLETTER, ["grace@example.com"], "mailgun:not_sent", tags=["newsletter"]),
    Case(
        "Order #1008 confirmed",
        ["heidi@example.com"],
        "mailgun:not_sent → postmark:skipped → smtp:accepted",
    ),
    Case(
        NEWSLETTER + " (EU)",
        ["paul@example.de"],
        "eu_smtp:not_sent → eu_backup:accepted",
        tags=["newsletter"],
    ),
    Case(
        "Invoice #1009",
        ["sam@example.com"],
        "eu_smtp:skipped → eu_backup:accepted",
        cc=["marie@example.fr"],
    ),
]

FINAL_STATUS = {"accepted": "sent", "rejected": "rejected", "uncertain": "uncertain"}


def expected_status(case: Case) -> str:
    last = case.expect.split(" → ")[-1].split(":")[1]
    return FINAL_STATUS.get(last, "failed")


# ---------------------------------------------------------------------------
# 4. Output helpers (plain text; the arrow degrades to "->" where needed)
# ---------------------------------------------------------------------------

OUTPUT: list[str] = []


class LogRecords(logging.Handler):
    """Keeps the router's log records, to check them for secrets."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())


LOGS = LogRecords()
ARROW = "→"


def say(text: str = "") -> None:
    OUTPUT.append(text)
    print(text if ARROW == "→" else text.replace("→", "->"))


def table(headers: list[str], rows: Iterable[list[str]], indent: str = "  ") -> None:
    rows = [headers, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    for n, row in enumerate(rows):
        say(indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            say(indent + "  ".join("-" * w for w in widths))


def attempts_text(message: mail.EmailMessage) -> str:
    attempts = message.mailrouter_attempts
    return " → ".join(f"{a.alias}:{a.outcome.value}" for a in attempts)


def message_id(message: mail.EmailMessage) -> str:
    return str(message.mailrouter_message_id)  # type: ignore[attr-defined]


def describe_when(when: dict[str, list[str]] | None) -> str:
    if not when:
        return "(everything else)"
    return "; ".join(f"{key} {', '.join(values)}" for key, values in when.items())


# ---------------------------------------------------------------------------
# 5. The run
# ---------------------------------------------------------------------------


def main() -> int:
    global ARROW
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="show the router's log records")
    args = parser.parse_args()
    try:
        ARROW.encode(sys.stdout.encoding or "ascii")
    except UnicodeEncodeError:
        ARROW = "->"

    servers = start_servers()
    try:
        return run(servers, verbose=args.verbose)
    finally:
        servers.stop()


def run(servers: Servers, *, verbose: bool) -> int:
    style = configure_django(servers, verbose=verbose)
    logging.getLogger("mailrouter").addHandler(LOGS)
    from mailrouter.signals import mailer_state_changed

    mailer_state_changed.connect(record_transition)
    say(f"django-mailrouter demo: Django {django.get_version()}, configured with {style}")
    say()
    say("Local servers (127.0.0.1)")
    rows = []
    for alias, server in servers.by_alias().items():
        kind = "SMTP" if isinstance(server, FaultySMTPServer) else "HTTP API"
        rows.append([alias, kind, f"port {server.port}", servers.faults.get(alias, "healthy")])
    table(["mailer", "kind", "address", "fault"], rows)
    say(f"  every SMTP server refuses the mailbox {INVALID_MAILBOX} with 550")
    say()
    say("Routes (first match wins)")
    table(
        ["route", "when", "mailers, in order"],
        [
            [r["name"], describe_when(r.get("when")), ", ".join(r["mailers"])]
            for r in ROUTER_OPTIONS["routes"]
        ],
    )
    # What `manage.py check` reports: configuration mistakes surface at startup.
    found = [c for c in checks.run_checks() if not c.is_silenced()]
    say(f"System checks: {len(found) or 'no'} issue{'s' if len(found) != 1 else ''}")
    for message in found:
        say(f"  {message.id}: {message.msg}")
    say()

    # One call, one batch. Messages that end without a mailer are reported
    # together, after the whole batch was processed.
    batch = [case.message() for case in BATCH]
    say(f"Sending {len(batch)} messages with one send_messages() call ...")
    started = time.monotonic()
    error: DeliveryError | None = None
    returned = None
    with default_mailer() as router:
        try:
            returned = router.send_messages(batch)
        except DeliveryError as raised:
            error = raised
    elapsed = time.monotonic() - started
    if error is not None:
        # One error for the whole batch, naming every message without a mailer.
        say(f"send_messages() raised DeliveryError: {str(error).splitlines()[0]}")
        for failure in error.failures:
            n = batch.index(failure.message) + 1
            say(f"  - #{n} {failure.message.subject!r}: {failure.status.value}")
    else:
        say(f"send_messages() returned {returned}")
    say()

    say("Messages")
    table(
        ["#", "subject", "route", "attempts", "sent_using", "status"],
        [
            [
                str(n),
                str(m.subject),
                m.mailrouter_route or "-",
                attempts_text(m),
                m.sent_using or "-",
                m.mailrouter_status.value,
            ]
            for n, m in enumerate(batch, 1)
        ],
    )
    say()
    say("  outcome kinds: not_sent  = nothing reached the mailer; the next one is tried")
    say("                 rejected  = the message itself was refused; not tried elsewhere")
    say("                 uncertain = the mailer may have it; not resent (at most once)")
    say("                 skipped   = not tried: it failed earlier in this batch")
    say()
    say("Why attempts failed (errors as recorded by the router, secrets redacted)")
    for n, m in enumerate(batch, 1):
        for a in m.mailrouter_attempts:
            if a.outcome.value != "accepted":
                why = f"{a.error_type}: {a.error}" if a.error_type else a.error
                say(f"  #{n:<2} {a.alias}:{a.outcome.value}: {elide(str(why), 110)}")
    say()

    problems = check(batch, servers, error, returned)
    summary(batch, servers, elapsed)
    say()
    problems += part_two(servers)
    say()
    if problems:
        say("FAILED: the router did not behave as designed:")
        for problem in problems:
            say(f"  - {problem}")
        return 1
    say(
        "OK: every message ended as designed; no server received any message twice, "
        "and each carried the Message-ID fixed before its first attempt; Mailgun's "
        "breaker opened, skipped it without a single request, and handed traffic back "
        "after one successful probe."
    )
    return 0


# ---------------------------------------------------------------------------
# 6. Part two: the circuit breaker across requests, and fail-back
# ---------------------------------------------------------------------------

TRANSITIONS: list[str] = []


def record_transition(sender: object, alias: str, old: object, new: object, reason: str,
                      **kwargs: object) -> None:
    TRANSITIONS.append(f"{alias}: {old} → {new} ({reason})".replace("→", ARROW))


#: (when, attempts) of each message of part two, sent one per call.
PART_TWO = [
    ("still down", "mailgun:skipped → postmark:accepted"),
    ("still down", "mailgun:skipped → postmark:accepted"),
    ("30 s later, recovered", "mailgun:accepted"),
    ("30 s later, recovered", "mailgun:accepted"),
]


def part_two(servers: Servers) -> list[str]:
    from io import StringIO

    from django.core.management import call_command

    say("Part two: Mailgun stays down. Its circuit breaker opened during the batch:")
    for line in TRANSITIONS:
        say(f"  {line}")
    say()
    say("$ python manage.py mailrouter status")
    out = StringIO()
    call_command("mailrouter", "status", stdout=out)
    for line in out.getvalue().splitlines():
        say(f"  {line}")
    say()
    say("Messages sent one per send_mail()-style call, as web requests do:")
    before = len(TRANSITIONS)
    requests_before = servers.mailgun.requests_seen
    requests_while_open = 0
    rows, problems = [], []
    for n, (when, expect) in enumerate(PART_TWO, 1):
        if n == 3:
            requests_while_open = servers.mailgun.requests_seen - requests_before
            servers.mailgun.mode = "ok"
            CLOCK.skipped += 30  # the cooldown, without waiting for it
        message = mail.EmailMessage(f"Order #20{n:02d} confirmed", "Hello.", None,
                                    ["kim@example.com"])
        default_mailer().send_messages([message])
        got = attempts_text(message)
        rows.append([str(n), when, got, message.sent_using or "-"])
        if got != expect.replace("→", ARROW):
            problems.append(f"part two, message {n}: expected {expect}, got {got}")
    table(["#", "mailgun", "attempts", "sent_using"], rows)
    say()
    say("  skipped = circuit open: not tried, no request made")
    say(f"  requests Mailgun saw while its breaker was open: {requests_while_open}")
    say()
    say("Breaker transitions since (signal mailer_state_changed, once per transition):")
    for line in TRANSITIONS[before:]:
        say(f"  {line}")
    expected = ["mailgun: open → half_open", "mailgun: half_open → closed"]
    got_transitions = [line.split(" (")[0] for line in TRANSITIONS[before:]]
    if got_transitions != [e.replace("→", ARROW) for e in expected]:
        problems.append(f"part two: transitions {got_transitions}, expected {expected}")
    if requests_while_open:
        problems.append("part two: Mailgun was contacted while its breaker was open")
    return problems


def received_ids(server: FaultySMTPServer | FakeESPServer) -> tuple[list[str], list[str]]:
    """Message-IDs a server accepted, and those it may have (ESP read timeout)."""
    accepted = [str(m.message_id) for m in server.messages]
    maybe = (
        [str(m.message_id) for m in server.maybe_delivered]
        if isinstance(server, FakeESPServer)
        else []
    )
    return accepted, maybe


def summary(batch: list[mail.EmailMessage], servers: Servers, elapsed: float) -> None:
    statuses = Counter(m.mailrouter_status.value for m in batch)
    say("Summary")
    say(
        "  "
        + ", ".join(f"{statuses[s]} {s}" for s in ("sent", "rejected", "failed", "uncertain"))
        + f" ({len(batch)} messages in {elapsed:.1f} s)"
    )
    accepted_by = Counter(m.sent_using for m in batch if m.sent_using)
    rows = []
    everywhere: Counter[str] = Counter()
    for alias, server in servers.by_alias().items():
        accepted, maybe = received_ids(server)
        copies = Counter(accepted + maybe)
        everywhere += copies
        rows.append(
            [
                alias,
                str(accepted_by[alias]),
                str(len(accepted)),
                str(len(maybe)) if isinstance(server, FakeESPServer) else "-",
                str(max(copies.values(), default=0)),
            ]
        )
    total = sum(accepted_by.values())
    received = sum(int(row[2]) for row in rows)
    maybe_total = sum(int(row[3]) for row in rows if row[3] != "-")
    copies_max = max(everywhere.values(), default=0)
    rows.append(["(all)", str(total), str(received), str(maybe_total), str(copies_max)])
    table(
        ["mailer", "accepted (router)", "received (server)", "maybe received", "copies/Message-ID"],
        rows,
    )


def check(
    batch: list[mail.EmailMessage],
    servers: Servers,
    error: DeliveryError | None,
    returned: int | None,
) -> list[str]:
    """Compare what the router reports with the plan and with what each server saw."""
    problems = []
    for n, (case, m) in enumerate(zip(BATCH, batch, strict=True), 1):
        got = (attempts_text(m), m.mailrouter_status.value)
        want = (case.expect, expected_status(case))
        if got != want:
            problems.append(f"#{n} {case.subject!r}: expected {want}, got {got}")

    not_sent = [m for m in batch if m.sent_using is None]
    if error is None:
        problems.append(f"send_messages() returned {returned} instead of raising DeliveryError")
    elif [f.message for f in error.failures] != not_sent:
        problems.append("DeliveryError does not list exactly the messages that were not sent")
    elif error.sent != len(batch) - len(not_sent):
        expected = len(batch) - len(not_sent)
        problems.append(f"DeliveryError.sent is {error.sent}, expected {expected}")

    # What each server actually received, by Message-ID.
    holders: dict[str, list[str]] = {}
    for alias, server in servers.by_alias().items():
        accepted, maybe = received_ids(server)
        for mid in accepted:
            holders.setdefault(mid, []).append(alias)
        for mid in maybe:
            holders.setdefault(mid, []).append(f"{alias} (maybe)")
        if server.errors:
            problems.append(f"server {alias} had internal errors: {server.errors!r}")
    ids = [message_id(m) for m in batch]
    if len(set(ids)) != len(ids):
        problems.append("two messages share a Message-ID")
    for mid in set(holders) - set(ids):
        problems.append(f"a server received {mid}, which is none of the batch's Message-IDs")
    for n, m in enumerate(batch, 1):
        status = m.mailrouter_status.value
        last = m.mailrouter_attempts[-1].alias
        want = {"sent": [last], "uncertain": [f"{last} (maybe)"]}.get(status, [])
        got = holders.get(message_id(m), [])
        if sorted(got) != want:
            problems.append(f"#{n} ({status}) should have reached {want or 'no server'}: {got}")

    errors = [str(a.error) for m in batch for a in m.mailrouter_attempts]
    everything = "\n".join([*OUTPUT, *LOGS.texts, *errors, str(error)])
    for secret in (MAILGUN_KEY, POSTMARK_TOKEN):
        if secret in everything:
            problems.append("a configured secret appears in the router's output")
    return problems


if __name__ == "__main__":
    sys.exit(main())
