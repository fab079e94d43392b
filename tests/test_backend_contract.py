"""What Django requires of every backend, and the router's own sending contract."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives

from mailrouter import signals
from mailrouter.compat import HAS_MAILERS
from mailrouter.errors import DeliveryError
from mailrouter.outcomes import MessageStatus, Outcome
from mailrouter.pool import MailerPool

from . import fakes
from .conftest import LOCMEM
from .messages import kinds, msg

SCRIPTED = "tests.fakes.ScriptedBackend"
MAILERS = {alias: {"BACKEND": SCRIPTED, "OPTIONS": {"name": alias}} for alias in ("a", "b", "c")}
FAILOVER = {"routes": [{"name": "main", "mailers": ["a", "b", "c"]}]}


def script(alias: str, *actions: str) -> None:
    fakes.SCRIPTS[alias].extend(actions)


# -- Django's backend contract ------------------------------------------------------


def test_send_mail_through_router_end_to_end(configure: Any) -> None:
    configure({"smtp": {"BACKEND": LOCMEM}}, {"routes": [{"mailers": ["smtp"]}]})
    if HAS_MAILERS:
        sent = EmailMessage("Subject", "Body", "from@example.com", ["to@example.com"]).send()
    else:
        sent = mail.send_mail("Subject", "Body", "from@example.com", ["to@example.com"])
    assert sent == 1 and len(mail.outbox) == 1


def test_unicode_content(configure: Any) -> None:
    router = configure({"x": {"BACKEND": LOCMEM}}, {"routes": [{"mailers": ["x"]}]})
    message = EmailMultiAlternatives(
        "Grüße ✉", "Ünïcødé body — 日本語", "Ünï <a@example.com>", ["Zoë <z@exämple.de>"]
    )
    message.attach_alternative("<p>Grüße</p>", "text/html")
    assert router.send_messages([message]) == 1
    assert "Grüße" in mail.outbox[0].message().as_string() or mail.outbox[0].subject == "Grüße ✉"


def test_django_file_and_console_backends_as_leaves(configure: Any, tmp_path: Any) -> None:
    """Django's other built-in backends work as leaves, routed and failed over."""
    import io

    stream = io.StringIO()
    mailers = {
        "files": {
            "BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "OPTIONS": {"file_path": str(tmp_path)},
        },
        "console": {
            "BACKEND": "django.core.mail.backends.console.EmailBackend",
            "OPTIONS": {"stream": stream},
        },
        "a": MAILERS["a"],
    }
    router = configure(
        mailers,
        {
            "routes": [
                {"when": {"to_domain": ["*.example.de"]}, "mailers": ["files"]},
                {"mailers": ["a", "console"]},
            ]
        },
    )
    script("a", "refuse_connect")
    eu, other = msg("Hallo", "u@mail.example.de"), msg("Hello", "u@example.com")
    assert router.send_messages([eu, other]) == 2
    assert (eu.sent_using, other.sent_using) == ("files", "console")  # type: ignore[attr-defined]
    assert kinds(other) == [("a", "not_sent"), ("console", "accepted")]
    [written] = tmp_path.iterdir()
    assert "Subject: Hallo" in written.read_text()
    assert "Subject: Hello" in stream.getvalue()
    # Both carry the Message-ID the router fixed before the first attempt.
    assert other.mailrouter_message_id in stream.getvalue()


def test_iterator_input_and_empty_input(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    assert router.send_messages(iter([msg(), msg()])) == 2
    assert router.send_messages([]) == 0
    assert router.send_messages(iter([])) == 0


def test_close_without_open_is_harmless(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    router.close()
    router.close()
    assert (fakes.OPEN_CALLS["a"], fakes.CLOSE_CALLS["a"]) == (0, 0)
    # Closing again after a held-open send closes each connection once.
    with router:
        router.send_messages([msg()])
    router.close()
    assert (fakes.OPEN_CALLS["a"], fakes.CLOSE_CALLS["a"]) == (1, 1)
    assert router.send_messages([msg()]) == 1  # still usable


def test_context_manager_keeps_connections_open_across_calls(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    with router as opened:
        assert opened is router
        router.send_messages([msg(), msg()])
        router.send_messages([msg()])
        assert fakes.OPEN_CALLS["a"] == 1 and fakes.CLOSE_CALLS["a"] == 0
    assert fakes.CLOSE_CALLS["a"] == 1


def test_batch_opens_each_mailer_once_and_closes_what_it_opened(configure: Any) -> None:
    router = configure(
        MAILERS,
        {
            "routes": [
                {"name": "b", "when": {"to_domain": ["*.b"]}, "mailers": ["b"]},
                {"mailers": ["a"]},
            ]
        },
    )
    batch = [msg(to=f"u{i}@x.{'b' if i % 2 else 'a'}") for i in range(10)]
    assert router.send_messages(batch) == 10
    assert (fakes.OPEN_CALLS["a"], fakes.OPEN_CALLS["b"]) == (1, 1)
    assert (fakes.CLOSE_CALLS["a"], fakes.CLOSE_CALLS["b"]) == (1, 1)
    assert len(fakes.RECEIVED["a"]) == 5 and len(fakes.RECEIVED["b"]) == 5


def test_connection_the_caller_opened_is_left_open(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    pool = MailerPool(router.config, router.mailer_table)
    leaf = pool.backend("a")
    leaf.open()
    pool.ensure_open("a", leaf)  # the leaf says it was open already
    pool.close_all()
    assert leaf.connected and fakes.CLOSE_CALLS["a"] == 0
    pool.ensure_open("b", pool.backend("b"))
    pool.close_all()
    assert fakes.CLOSE_CALLS["b"] == 1


def test_alias_is_set(configure: Any, style: str) -> None:
    router = configure(MAILERS, FAILOVER)
    assert router.alias == ("default" if style == "mailers" else None)


def test_message_without_recipients_is_not_sent_nor_counted(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    empty = EmailMessage("x", "y", "app@example.com", [])
    assert router.send_messages([empty]) == 0
    assert empty.sent_using is None and fakes.OPEN_CALLS == {}


# -- Failover semantics ---------------------------------------------------------------


def test_not_sent_fails_over_and_records_attempts(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    script("a", "tempfail")
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("a", "not_sent"), ("b", "accepted")]
    assert message.sent_using == "b" and message.mailrouter_status is MessageStatus.SENT
    assert message.mailrouter_attempts[0].error_type == "SMTPDataError"
    assert "451" in message.mailrouter_attempts[0].error


def test_rejected_is_not_failed_over(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    script("a", "reject")
    message = msg()
    with pytest.raises(DeliveryError) as raised:
        router.send_messages([message])
    assert kinds(message) == [("a", "rejected")]
    assert raised.value.failures[0].status is MessageStatus.REJECTED
    assert fakes.RECEIVED["b"] == []


def test_incompatible_tries_next(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    script("a", "incompatible")
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("a", "incompatible"), ("b", "accepted")]


def test_uncertain_is_not_resent_by_default(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    script("a", "drop_after_body")
    message = msg()
    with pytest.raises(DeliveryError, match="uncertain"):
        router.send_messages([message])
    assert kinds(message) == [("a", "uncertain")]
    assert message.mailrouter_status is MessageStatus.UNCERTAIN and fakes.RECEIVED["b"] == []


def test_at_least_once_resends_uncertain(configure: Any) -> None:
    router = configure(MAILERS, {**FAILOVER, "delivery": "at_least_once"})
    script("a", "drop_after_body")
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("a", "uncertain"), ("b", "accepted")]
    assert fakes.RECEIVED["a"] == fakes.RECEIVED["b"]  # same Message-ID twice: detectable


def test_dead_mailer_costs_one_failure_per_batch(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    script("a", "refuse_connect")
    batch = [msg() for _ in range(5)]
    assert router.send_messages(batch) == 5
    assert kinds(batch[0]) == [("a", "not_sent"), ("b", "accepted")]
    assert all(kinds(m) == [("a", "skipped"), ("b", "accepted")] for m in batch[1:])
    assert fakes.OPEN_CALLS["a"] == 1


def test_one_failure_never_stops_the_batch_and_error_names_all(configure: Any) -> None:
    router = configure(MAILERS, {"routes": [{"mailers": ["a"]}]})
    script("a", "accept", "reject", "accept", "tempfail", "accept")
    batch = [msg(subject=f"m{i}") for i in range(5)]
    with pytest.raises(DeliveryError) as raised:
        router.send_messages(batch)
    error = raised.value
    assert error.sent == 3
    assert [f.message.subject for f in error.failures] == ["m1", "m3"]
    assert "'m1'" in str(error) and "'m3'" in str(error) and "a: rejected" in str(error)


def test_fail_silently_returns_count() -> None:
    # fail_silently is a legacy get_connection() argument; Django 6.1 passes it
    # to the MAILERS "default" router too.
    from mailrouter.testing.settings import router_settings

    with router_settings(MAILERS, {"routes": [{"mailers": ["a"]}]}):
        router = mail.get_connection(fail_silently=True)
        script("a", "reject")
        assert router.send_messages([msg(), msg()]) == 1


def test_message_id_is_fixed_before_first_attempt_and_kept(configure: Any) -> None:
    router = configure(MAILERS, {**FAILOVER, "delivery": "at_least_once"})
    script("a", "drop_after_body")
    script("b", "tempfail")
    message = msg()
    router.send_messages([message])
    (received_a,), (received_c,) = fakes.RECEIVED["a"], fakes.RECEIVED["c"]
    assert received_a == received_c == message.mailrouter_message_id


def test_a_message_object_reused_for_another_message_gets_a_new_id(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    message = msg()
    ids = []
    for user in ("ann@example.com", "bob@example.com"):
        message.to = [user]
        router.send_messages([message])
        ids.append(message.mailrouter_message_id)
    assert ids[0] != ids[1]
    assert fakes.RECEIVED["a"] == ids


def test_the_same_message_sent_twice_gets_two_message_ids(configure: Any) -> None:
    """Sent again on purpose, it is a second message, as with Django's own
    backends (a new Message-ID at every ``message()``): a receiving server
    must not discard it as a duplicate of the first."""
    router = configure({"x": {"BACKEND": LOCMEM}}, {"routes": [{"mailers": ["x"]}]})
    headers = {"X-Campaign": "spring"}
    message = EmailMessage("s", "b", "app@example.com", ["u@example.com"], headers=headers)
    ids = []
    for _ in range(2):
        assert router.send_messages([message]) == 1
        ids.append(message.mailrouter_message_id)  # type: ignore[attr-defined]
        # The caller's headers, as the caller wrote them: the same dict, unchanged.
        assert message.extra_headers is headers and headers == {"X-Campaign": "spring"}
    assert ids[0] != ids[1]
    assert [copy.message()["Message-ID"] for copy in mail.outbox] == ids


def test_one_message_id_per_send_shared_by_its_attempts_and_records(configure: Any) -> None:
    router = configure(MAILERS, {**FAILOVER, "delivery": "at_least_once"})
    script("a", "refuse_connect")
    failing, uncertain = msg("failing"), msg("uncertain")
    script("b", "drop_after_body")  # "b" timed out: skipped for the rest of the batch
    script("c", "tempfail", "reject")
    with pytest.raises(DeliveryError) as raised:
        router.send_messages([uncertain, failing])
    for message in (uncertain, failing):
        used = message.mailrouter_message_id  # type: ignore[attr-defined]
        attempts = message.mailrouter_attempts  # type: ignore[attr-defined]
        # Every record, the skipped "a" included, names the ID the send used.
        assert len(attempts) == 3 and {a.message_id for a in attempts} == {used}
        assert used in str(raised.value)
        assert "Message-ID" not in message.extra_headers
    # What the mailers got carried it: "b" (uncertain), then "c", the same ID.
    seen = [(alias, mid) for alias, mid, subject, _ in fakes.SEEN if subject == "uncertain"]
    used = uncertain.mailrouter_message_id  # type: ignore[attr-defined]
    assert seen == [("b", used), ("c", used)]  # "a" refused the connection


def test_a_callers_message_id_is_kept_on_every_send(configure: Any) -> None:
    """An application that wants one ID across its own retries sets it."""
    router = configure(MAILERS, {"routes": [{"mailers": ["a"]}]})
    message = msg()
    message.extra_headers = {"Message-ID": "<order-42@example.com>"}
    router.send_messages([message])
    router.send_messages([message])
    assert fakes.RECEIVED["a"] == ["<order-42@example.com>"] * 2
    assert message.mailrouter_message_id == "<order-42@example.com>"  # type: ignore[attr-defined]


def test_existing_message_id_is_respected_and_shared_headers_untouched(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    shared: dict[str, str] = {}
    first = EmailMessage("a", "b", "app@example.com", ["u@example.com"], headers=shared)
    second = EmailMessage("a", "b", "app@example.com", ["u@example.com"], headers=shared)
    mine = EmailMessage(
        "a", "b", "app@example.com", ["u@example.com"], headers={"message-id": "<mine@example.com>"}
    )
    router.send_messages([first, second, mine])
    assert shared == {}
    assert first.mailrouter_message_id != second.mailrouter_message_id
    assert fakes.RECEIVED["a"][2] == "None"  # the fake reads "Message-ID"; ours was lower-case
    assert (
        "Message-ID" not in mine.extra_headers
        and mine.extra_headers["message-id"] == "<mine@example.com>"
    )
    # The caller's own ID is theirs to manage, even when the message changes.
    mine.to = ["other@example.com"]
    router.send_messages([mine])
    assert mine.extra_headers["message-id"] == "<mine@example.com>"
    assert "Message-ID" not in mine.extra_headers


def test_failed_attempt_changes_do_not_leak(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    script("a", "tempfail")
    script("b", "incompatible")
    message = msg()
    router.send_messages([message])
    # Only the accepting mailer's own change remains.
    assert message.touched == ["c"]
    assert message.extra_headers["X-Touched-By"] == "c"


def test_final_failure_restores_the_message(configure: Any) -> None:
    router = configure(MAILERS, {"routes": [{"mailers": ["a"]}]})
    script("a", "tempfail")
    message = msg()
    with pytest.raises(DeliveryError):
        router.send_messages([message])
    assert not hasattr(message, "touched") and "X-Touched-By" not in message.extra_headers


# -- Signals and logs ------------------------------------------------------------------


def test_signals(configure: Any) -> None:
    router = configure(MAILERS, {"routes": [{"mailers": ["a", "b"]}]})
    seen: list[tuple[str, dict[str, Any]]] = []

    def receiver(name: str) -> Any:
        def handle(sender: Any, **kwargs: Any) -> None:
            seen.append((name, kwargs))

        return handle

    handlers = {
        name: receiver(name) for name in ("attempt_failed", "message_sent", "message_failed")
    }
    for name, handler in handlers.items():
        getattr(signals, name).connect(handler)
    try:
        script("a", "tempfail", "tempfail")
        script("b", "accept", "reject")
        with pytest.raises(DeliveryError):
            router.send_messages([msg("ok"), msg("bad")])
    finally:
        for name, handler in handlers.items():
            getattr(signals, name).disconnect(handler)
    names = [name for name, _ in seen]
    assert names == [
        "attempt_failed",
        "message_sent",
        "attempt_failed",
        "attempt_failed",
        "message_failed",
    ]
    failed = seen[0][1]
    assert (
        failed["alias"] == "a"
        and failed["outcome"] is Outcome.NOT_SENT
        and "451" in failed["error"]
    )
    assert seen[1][1]["alias"] == "b" and len(seen[1][1]["attempts"]) == 2
    assert seen[4][1]["status"] is MessageStatus.REJECTED


def test_a_raising_signal_receiver_changes_nothing(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("observer bug")

    signals.message_sent.connect(broken)
    try:
        assert router.send_messages([msg()]) == 1
    finally:
        signals.message_sent.disconnect(broken)


def test_log_records_name_alias_and_outcome(
    configure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    router = configure(MAILERS, FAILOVER)
    script("a", "tempfail")
    with caplog.at_level(logging.DEBUG, logger="mailrouter"):
        router.send_messages([msg()])
    failure = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert failure.mailrouter_alias == "a" and failure.mailrouter_outcome == "not_sent"  # type: ignore[attr-defined]
    assert "a" in failure.getMessage() and "not_sent" in failure.getMessage()


# -- Secrets ----------------------------------------------------------------------------


class LeakyBackend(fakes.ScriptedBackend):
    """Fails with an error text that contains its own credentials."""

    def __init__(self, *args: Any, api_key: str = "", password: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.api_key, self.password = api_key, password

    def send_messages(self, email_messages: Any) -> int:
        raise ConnectionRefusedError(
            111, f"refused https://api:{self.api_key}@esp.example/v3 with password {self.password}"
        )


def test_secrets_never_appear(configure: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret_key, secret_password = "key-0123456789abcdef", "hunter2-very-secret"
    mailers = {
        "leaky": {
            "BACKEND": "tests.test_backend_contract.LeakyBackend",
            "OPTIONS": {"name": "leaky", "api_key": secret_key, "password": secret_password},
        }
    }
    router = configure(mailers, {"routes": [{"mailers": ["leaky"]}]})
    payloads: list[Any] = []

    def spy(sender: Any, **kwargs: Any) -> None:
        payloads.append(kwargs)

    signals.attempt_failed.connect(spy)
    try:
        with (
            caplog.at_level(logging.DEBUG, logger="mailrouter"),
            pytest.raises(DeliveryError) as raised,
        ):
            router.send_messages([msg()])
    finally:
        signals.attempt_failed.disconnect(spy)
    texts = [
        str(raised.value),
        caplog.text,
        repr(payloads[0]["attempt"]),
        str(payloads[0]["error"]),
        repr(raised.value.failures[0].attempts),
    ]
    for text in texts:
        assert secret_key not in text and secret_password not in text
    assert "***" in str(raised.value)


def test_nested_router_fails_over_inside_and_reports_outside(configure: Any) -> None:
    mailers = {
        **MAILERS,
        "eu": {
            "BACKEND": "mailrouter.backend.RouterBackend",
            "OPTIONS": {"routes": [{"mailers": ["a", "b"]}]},
        },
    }
    router = configure(mailers, {"routes": [{"mailers": ["eu", "c"]}]})
    script("a", "tempfail")
    failed_over = msg()
    assert router.send_messages([failed_over]) == 1
    assert kinds(failed_over) == [("eu", "accepted")]
    assert fakes.RECEIVED["b"] == [failed_over.mailrouter_message_id]
    script("a", "reject")
    rejected = msg()
    with pytest.raises(DeliveryError, match="a: rejected"):
        router.send_messages([rejected])
    assert kinds(rejected) == [("eu", "rejected")]  # not retried at "c"
    assert fakes.RECEIVED["c"] == []


class NoCountBackend(fakes.ScriptedBackend):
    """A third-party backend that sends but forgets to return a count."""

    def send_messages(self, email_messages: Any) -> Any:
        super().send_messages(email_messages)
        return None


def test_a_backend_returning_no_count_is_uncertain_not_resent(configure: Any) -> None:
    mailers = {
        **MAILERS,
        "x": {"BACKEND": "tests.test_backend_contract.NoCountBackend", "OPTIONS": {"name": "x"}},
    }
    router = configure(mailers, {"routes": [{"mailers": ["x", "b"]}]})
    message = msg()
    with pytest.raises(DeliveryError, match="instead of a count"):
        router.send_messages([message])
    assert kinds(message) == [("x", "uncertain")]
    assert fakes.RECEIVED["b"] == []


def test_a_leaf_that_returns_zero_is_failed_over(
    configure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.mail.backends import dummy

    mailers = {**MAILERS, "quiet": {"BACKEND": "django.core.mail.backends.dummy.EmailBackend"}}
    router = configure(mailers, {"routes": [{"mailers": ["quiet", "b"]}]})
    monkeypatch.setattr(dummy.EmailBackend, "send_messages", lambda self, messages: 0)
    message = msg()
    assert router.send_messages([message]) == 1
    assert kinds(message) == [("quiet", "not_sent"), ("b", "accepted")]


def test_a_bad_item_is_refused_before_anything_is_sent(configure: Any) -> None:
    router = configure(MAILERS, FAILOVER)
    with pytest.raises(TypeError, match=r"item 1 is str \(nothing was sent\)"):
        router.send_messages([msg(), "not a message"])  # type: ignore[list-item]
    assert fakes.RECEIVED == {} and fakes.OPEN_CALLS == {}


def test_delivery_error_survives_pickling(configure: Any) -> None:
    import pickle

    router = configure(MAILERS, {"routes": [{"mailers": ["a"]}]})
    script("a", "reject")
    with pytest.raises(DeliveryError) as raised:
        router.send_messages([msg("pickled")])
    copy = pickle.loads(pickle.dumps(raised.value))
    assert str(copy) == str(raised.value) and copy.sent == 0
    assert copy.failures[0].attempts == raised.value.failures[0].attempts


# -- Malformed messages, observers (issue #13) -----------------------------------------


class BrokenRecipients(EmailMessage):
    def recipients(self) -> list[str]:
        raise RuntimeError("recipients() failed")


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (lambda m: setattr(m, "to", None), "message.to must be a list or tuple of addresses"),
        (lambda m: setattr(m, "to", "u@example.com"), "message.to must be a list or tuple"),
        (lambda m: setattr(m, "cc", "c@example.com"), "message.cc must be a list or tuple"),
        (lambda m: setattr(m, "extra_headers", None), "message.extra_headers must be a mapping"),
        (lambda m: setattr(m, "__class__", BrokenRecipients), "RuntimeError: recipients() failed"),
    ],
)
def test_one_malformed_message_fails_alone_and_the_batch_goes_on(
    configure: Any, breakage: Any, reason: str
) -> None:
    configure({"smtp": {"BACKEND": LOCMEM}}, {"routes": [{"mailers": ["smtp"]}]})
    router = mail.get_connection()
    batch = [msg("first"), msg("bad"), msg("last")]
    breakage(batch[1])
    with pytest.raises(DeliveryError) as raised:
        router.send_messages(batch)
    [failure] = raised.value.failures
    assert failure.message is batch[1] and failure.status is MessageStatus.FAILED
    assert failure.reason is not None and reason in failure.reason
    assert reason in str(raised.value)
    assert batch[1].mailrouter_status is MessageStatus.FAILED  # type: ignore[attr-defined]
    assert batch[1].mailrouter_attempts == []  # type: ignore[attr-defined]
    assert [m.subject for m in mail.outbox] == ["first", "last"]
    assert raised.value.sent == 2


def test_at_least_once_uncertain_then_rejected_stays_uncertain(configure: Any) -> None:
    router = configure(MAILERS, {**FAILOVER, "delivery": "at_least_once"})
    script("a", "drop_after_body")
    script("b", "reject")
    message = msg()
    with pytest.raises(DeliveryError) as raised:
        router.send_messages([message])
    assert kinds(message) == [("a", "uncertain"), ("b", "rejected")]
    # "a" may have delivered it: the status must keep saying so.
    assert message.mailrouter_status is MessageStatus.UNCERTAIN  # type: ignore[attr-defined]
    assert raised.value.failures[0].status is MessageStatus.UNCERTAIN


def test_attempt_failed_receivers_cannot_change_what_the_next_mailer_sends(
    configure: Any,
) -> None:
    from collections import OrderedDict

    router = configure(MAILERS, FAILOVER)
    script("a", "tempfail")

    def meddle(sender: Any, message: EmailMessage, **kwargs: Any) -> None:
        message.to.append("intruder@example.com")
        message.subject = "changed by an observer"

    signals.attempt_failed.connect(meddle)
    try:
        message = msg("original")
        # The caller's own Message-ID: the router keeps their OrderedDict.
        message.extra_headers = OrderedDict([("Message-ID", "<m1@example.com>")])
        router.send_messages([message])
    finally:
        signals.attempt_failed.disconnect(meddle)
    assert kinds(message) == [("a", "not_sent"), ("b", "accepted")]
    assert message.to == ["user@example.com"] and message.subject == "original"
    # The failed leaf's header did not leak through the OrderedDict.
    assert message.touched == ["b"] and message.extra_headers["X-Touched-By"] == "b"
    assert type(message.extra_headers) is OrderedDict


def test_snapshots_copy_container_subclasses_keeping_their_type() -> None:
    from collections import OrderedDict, UserList, defaultdict

    from mailrouter.snapshot import MessageSnapshot

    message = msg()
    message.extra_headers = OrderedDict([("X-A", "1")])
    message.tags = UserList(["t"])  # type: ignore[attr-defined]
    message.merge_data = defaultdict(dict, {"u@example.com": {"n": [1]}})  # type: ignore[attr-defined]
    snapshot = MessageSnapshot(message)
    message.extra_headers["X-Leak"] = "2"
    message.tags.append("leak")  # type: ignore[attr-defined]
    message.merge_data["u@example.com"]["n"].append(2)  # type: ignore[attr-defined]
    snapshot.restore(message)
    assert message.extra_headers == {"X-A": "1"} and type(message.extra_headers) is OrderedDict
    assert list(message.tags) == ["t"] and isinstance(message.tags, UserList)  # type: ignore[attr-defined]
    assert message.merge_data == {"u@example.com": {"n": [1]}}  # type: ignore[attr-defined]
    assert type(message.merge_data) is defaultdict  # type: ignore[attr-defined]
