"""Router option ``concurrency``: a batch sent over worker threads looks
exactly like the serial send to the caller, really runs in parallel, keeps
one leaf instance per worker, and leaves no thread or connection behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

from mailrouter import signals
from mailrouter.errors import ConfigurationError, DeliveryError
from mailrouter.outcomes import MessageStatus
from mailrouter.testing.settings import router_settings

from . import fakes
from .conftest import make_router
from .esp_fixtures import API_KEY, mailgun, postmark

SCRIPTED = "tests.fakes.ScriptedBackend"


def scripted(*aliases: str) -> dict[str, Any]:
    return {alias: {"BACKEND": SCRIPTED, "OPTIONS": {"name": alias}} for alias in aliases}


def msg(subject: str, to: str = "u@example.com") -> EmailMessage:
    return EmailMessage(subject, "Body", "app@example.com", [to])


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mailrouter-worker")]


class Recorder:
    """Every router signal, in order, with the thread it was sent from."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None, str]] = []

    def __call__(self, signal: Any, message: EmailMessage, **kwargs: Any) -> None:
        name = {signals.attempt_failed: "attempt_failed", signals.message_sent: "sent",
                signals.message_failed: "failed"}[signal]  # fmt: skip
        detail = kwargs.get("alias") or str(kwargs.get("status"))
        self.events.append((name, str(message.subject), detail, threading.current_thread().name))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    for signal in (signals.attempt_failed, signals.message_sent, signals.message_failed):
        signal.connect(recorder, weak=False)
    yield recorder
    for signal in (signals.attempt_failed, signals.message_sent, signals.message_failed):
        signal.disconnect(recorder)


ROUTES = [
    # Messages to reject.test go to a mailer that always rejects; those to
    # down.test to one that refuses connections, then fail over to "c".
    {"when": {"to_domain": ["reject.test"]}, "mailers": ["bad", "c"]},
    {"when": {"to_domain": ["down.test"]}, "mailers": ["down", "c"]},
    {"mailers": ["a", "b"]},
]


def mixed_batch() -> list[EmailMessage]:
    batch = []
    for index in range(30):
        # One message to the dead mailer: with two, which of them fails to
        # connect and which skips it ("down earlier in this batch") is a race.
        domain = ("example.com", "reject.test", "example.com", "example.com")[index % 4]
        if index == 6:
            domain = "down.test"
        batch.append(msg(f"m{index:02d}", f"user{index}@{domain}"))
    batch.append(EmailMessage("nobody", "Body", "app@example.com", []))
    return batch


def send(concurrency: int, recorder: Recorder) -> tuple[list[Any], Any, list[Any]]:
    fakes.reset()
    fakes.SCRIPTS["bad"].extend(["reject"] * 100)
    fakes.SCRIPTS["down"].extend(["refuse_connect"] * 100)
    recorder.events.clear()
    batch = mixed_batch()
    options = {"routes": ROUTES, "concurrency": concurrency, "health": False}
    leaves = scripted("a", "b", "c", "bad", "down")
    with router_settings(leaves, options), pytest.raises(DeliveryError) as raised:
        make_router().send_messages(batch)
    summary = [
        (
            m.subject, m.sent_using, m.mailrouter_status, m.mailrouter_route,  # type: ignore[attr-defined]
            [(a.alias, a.outcome, a.error) for a in m.mailrouter_attempts],  # type: ignore[attr-defined]
        )
        for m in batch
    ]
    error = (raised.value.sent, [(f.message.subject, f.status) for f in raised.value.failures])
    return summary, error, list(recorder.events)


def test_concurrent_batch_looks_exactly_like_the_serial_one(recorder: Recorder) -> None:
    serial = send(1, recorder)
    concurrent = send(4, recorder)
    assert concurrent[0] == serial[0]
    assert concurrent[1] == serial[1]
    assert serial[1][0] == 22  # 21 through a, one through c after "down" refused
    assert len(serial[1][1]) == 8  # rejected by "bad", not failed over
    # The same signals, in the same order, all sent from the caller's thread.
    caller = threading.current_thread().name
    assert [e[:3] for e in concurrent[2]] == [e[:3] for e in serial[2]]
    assert {e[3] for e in concurrent[2]} == {caller}
    assert not worker_threads()


def test_workers_really_run_in_parallel_with_a_leaf_each() -> None:
    """Four messages meet at a barrier inside the leaf: only possible if four
    workers send at once (a serial send would break the barrier)."""
    BarrierBackend.reset(parties=4)
    leaves = {"slow": {"BACKEND": "tests.test_concurrency.BarrierBackend"}}
    options = {"routes": [{"mailers": ["slow"]}], "concurrency": 4}
    batch = [msg(f"p{i}") for i in range(8)]
    with router_settings(leaves, options):
        assert make_router().send_messages(batch) == 8
    assert all(m.mailrouter_status is MessageStatus.SENT for m in batch)  # type: ignore[attr-defined]
    # One leaf instance per worker, never used by two threads, all closed.
    threads_per_leaf = BarrierBackend.threads_per_instance()
    assert len(threads_per_leaf) == 4
    assert all(len(threads) == 1 for threads in threads_per_leaf.values())
    assert BarrierBackend.opened == BarrierBackend.closed == 4
    assert not worker_threads()


class BarrierBackend(LocmemBackend):
    barrier = threading.Barrier(1)
    lock = threading.Lock()
    used: list[tuple[int, int]] = []
    opened = closed = 0

    @classmethod
    def reset(cls, parties: int) -> None:
        cls.barrier = threading.Barrier(parties, timeout=20)
        cls.used, cls.opened, cls.closed = [], 0, 0

    @classmethod
    def threads_per_instance(cls) -> dict[int, set[int]]:
        result: dict[int, set[int]] = {}
        for instance, thread in cls.used:
            result.setdefault(instance, set()).add(thread)
        return result

    def open(self) -> bool:
        with self.lock:
            type(self).opened += 1
        return True

    def close(self) -> None:
        with self.lock:
            type(self).closed += 1

    def send_messages(self, messages: Any) -> int:
        with self.lock:
            type(self).used.append((id(self), threading.get_ident()))
        self.barrier.wait()
        return super().send_messages(messages)


def test_connections_are_closed_and_threads_joined_batch_after_batch() -> None:
    options = {"routes": [{"mailers": ["a", "b"]}], "concurrency": 3}
    before = threading.active_count()
    with router_settings(scripted("a", "b"), options):
        for round_number in range(5):
            fakes.SCRIPTS["a"].extend(["accept", "refuse_connect", "tempfail"])
            batch = [msg(f"r{round_number}m{i}") for i in range(7)]
            assert make_router().send_messages(batch) == 7
    assert threading.active_count() == before
    assert not worker_threads()
    for alias in ("a", "b"):
        assert fakes.OPEN_CALLS[alias] >= fakes.CLOSE_CALLS[alias] > 0
    # Every connection that opened successfully was closed.
    refused = 5  # one refuse_connect per round failed in open()
    assert fakes.CLOSE_CALLS["a"] == fakes.OPEN_CALLS["a"] - refused
    assert fakes.CLOSE_CALLS["b"] == fakes.OPEN_CALLS["b"]


def test_held_open_router_keeps_worker_connections_until_close() -> None:
    options = {"routes": [{"mailers": ["a"]}], "concurrency": 2}
    with router_settings(scripted("a"), options):
        router = make_router()
        router.open()
        for round_number in range(3):
            router.send_messages([msg(f"h{round_number}m{i}") for i in range(4)])
        # At most one connection per worker, reused across batches.
        assert 1 <= fakes.OPEN_CALLS["a"] <= 2 and fakes.CLOSE_CALLS["a"] == 0
        router.close()
    assert fakes.CLOSE_CALLS["a"] == fakes.OPEN_CALLS["a"]
    assert not worker_threads()


def test_a_legacy_connection_is_used_only_from_the_callers_thread() -> None:
    class Connection(LocmemBackend):
        threads: list[str] = []

        def send_messages(self, messages: Any) -> int:
            self.threads.append(threading.current_thread().name)
            return super().send_messages(messages)

    connection = Connection()
    options = {"routes": [{"mailers": ["a"]}], "concurrency": 4}
    with router_settings(scripted("a"), options):
        batch = [msg(f"c{i}") for i in range(6)]
        for message in batch[::2]:
            # Set as Django stores it, without 6.1's deprecation warning.
            slot = "_connection" if "_connection" in message.__dict__ else "connection"
            message.__dict__[slot] = connection
        assert make_router().send_messages(batch) == 6
    assert Connection.threads == [threading.current_thread().name] * 3
    assert len(mail.outbox) == 3
    assert [m.sent_using for m in batch[1::2]] == ["a"] * 3  # type: ignore[attr-defined]


def test_the_same_message_object_twice_is_sent_twice_in_order() -> None:
    options = {"routes": [{"mailers": ["a"]}], "concurrency": 4}
    with router_settings(scripted("a"), options):
        message = msg("twice")
        assert make_router().send_messages([message, message]) == 2
    assert len(fakes.RECEIVED["a"]) == 2


def test_an_exception_escaping_a_worker_is_raised_and_no_thread_is_left() -> None:
    leaves = {"boom": {"BACKEND": "tests.test_concurrency.InterruptingBackend"}}
    options = {"routes": [{"mailers": ["boom"]}], "concurrency": 3}
    with router_settings(leaves, options):
        batch = [msg(f"x{i}") for i in range(6)]
        batch[2].subject = "interrupt"
        with pytest.raises(KeyboardInterrupt):
            make_router().send_messages(batch)
    assert not worker_threads()
    # Messages before the interrupted one were finished and reported.
    assert [m.mailrouter_status for m in batch[:2]] == [MessageStatus.SENT] * 2  # type: ignore[attr-defined]


class InterruptingBackend(LocmemBackend):
    def send_messages(self, messages: Any) -> int:
        for message in messages:
            if message.subject == "interrupt":
                raise KeyboardInterrupt
        return super().send_messages(messages)


@pytest.mark.parametrize("value", [0, -1, 1000, "4", True, 2.5])
def test_invalid_concurrency_fails_at_startup(value: Any) -> None:
    options = {"routes": [{"mailers": ["a"]}], "concurrency": value}
    with router_settings(scripted("a"), options), pytest.raises(ConfigurationError) as raised:
        make_router()
    assert "'concurrency'" in str(raised.value) and repr(value) in str(raised.value)


def test_anymail_backends_over_http_keep_alive_with_concurrency(esps: Any) -> None:
    """Real Anymail backends, one HTTP session per worker: a 503 from
    Mailgun fails over to Postmark with the message's one Message-ID."""
    mg, pm = esps
    mg.schedule = ["ok", "error_503", "ok", "ok", "error_503"]
    leaves = {"mailgun": mailgun(mg), "postmark": postmark(pm)}
    options = {"routes": [{"mailers": ["mailgun", "postmark"]}], "concurrency": 4,
               "health": False}  # fmt: skip
    batch = [msg(f"e{i}") for i in range(12)]
    with router_settings(leaves, options):
        assert make_router().send_messages(batch) == 12
    received = [r.message_id for r in mg.messages] + [r.message_id for r in pm.messages]
    assert sorted(received) == sorted(m.mailrouter_message_id for m in batch)
    assert len(pm.messages) == 2 and len(mg.messages) == 10
    assert not worker_threads()


@pytest.fixture
def esps() -> Iterator[Any]:
    from mailrouter.testing import FakeESPServer

    with FakeESPServer(api_key=API_KEY) as mg, FakeESPServer(api_key=API_KEY) as pm:
        yield mg, pm


class DatabaseBackend(LocmemBackend):
    """A leaf that uses the database, as queueing backends do."""

    threads: list[str] = []

    def send_messages(self, messages: Any) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        self.threads.append(threading.current_thread().name)
        return super().send_messages(messages)


@pytest.mark.django_db(transaction=True)
def test_database_connections_of_worker_threads_are_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(Django never really closes the test suite's in-memory SQLite, so the
    close is observed where it is made, in each worker thread.)"""
    from django.db import connections

    closed_in: list[str] = []
    close_all = connections.close_all

    def recording_close_all() -> None:
        closed_in.append(threading.current_thread().name)
        close_all()

    monkeypatch.setattr(connections, "close_all", recording_close_all)
    DatabaseBackend.threads = []
    leaves = {"db": {"BACKEND": "tests.test_concurrency.DatabaseBackend"}}
    options = {"routes": [{"mailers": ["db"]}], "concurrency": 3}
    with router_settings(leaves, options):
        assert make_router().send_messages([msg(f"d{i}") for i in range(9)]) == 9
    assert set(DatabaseBackend.threads) <= set(closed_in)
    assert all(name.startswith("mailrouter-worker") for name in closed_in)


def test_a_nested_router_is_reached_from_the_callers_thread() -> None:
    """A router behind this one learns the routing path from the caller's
    thread (a loop back is refused there), so such messages are sent inline;
    the others still go over the workers."""
    leaves = {
        **scripted("a", "b"),
        "inner": {"BACKEND": "mailrouter.backend.RouterBackend",
                  "OPTIONS": {"routes": [{"mailers": ["a"]}]}},
    }  # fmt: skip
    routes = [{"when": {"to_domain": ["nested.test"]}, "mailers": ["inner", "b"]},
              {"mailers": ["b"]}]  # fmt: skip
    with router_settings(leaves, {"routes": routes, "concurrency": 3}):
        batch = [msg(f"n{i}", f"u{i}@{'nested.test' if i % 2 else 'example.com'}")
                 for i in range(8)]  # fmt: skip
        assert make_router().send_messages(batch) == 8
    # sent_using is the leaf; the way through "inner" is in the attempt record.
    assert [m.sent_using for m in batch] == ["b", "a"] * 4  # type: ignore[attr-defined]
    assert [m.mailrouter_attempts[-1].via for m in batch] == [(), ("a",)] * 4  # type: ignore[attr-defined]
    assert len(fakes.RECEIVED["a"]) == 4 and len(fakes.RECEIVED["b"]) == 4
    assert not worker_threads()


def test_attempt_failed_receivers_see_the_failed_attempt_not_the_backups_answer(
    esps: Any,
) -> None:
    """Real Mailgun answering 503, real Postmark accepting: with workers,
    ``attempt_failed`` receivers see the message as Mailgun's attempt left
    it (exactly what serial mode shows them), never Postmark's answer that
    the failover put on it later."""
    mg, pm = esps
    seen: list[tuple[str, str, Any, Any]] = []

    def receiver(message: EmailMessage, alias: str, **kwargs: Any) -> None:
        status = message.anymail_status  # type: ignore[attr-defined]
        response = status.esp_response
        seen.append((str(message.subject), alias, status.message_id,
                     None if response is None else response.status_code))  # fmt: skip

    leaves = {"mailgun": mailgun(mg), "postmark": postmark(pm)}
    signals.attempt_failed.connect(receiver, weak=False)
    try:
        observed = {}
        for concurrency in (1, 4):
            mg.mode = "error_503"
            seen.clear()
            options = {"routes": [{"mailers": ["mailgun", "postmark"]}],
                       "concurrency": concurrency, "health": False}  # fmt: skip
            batch = [msg(f"f{i}") for i in range(6)]
            with router_settings(leaves, options):
                assert make_router().send_messages(batch) == 6
            assert {m.sent_using for m in batch} == {"postmark"}  # type: ignore[attr-defined]
            # Afterwards the message carries Postmark's answer, as before.
            assert all(m.anymail_status.esp_response.status_code == 200 for m in batch)  # type: ignore[attr-defined]
            observed[concurrency] = list(seen)
    finally:
        signals.attempt_failed.disconnect(receiver)
    postmark_ids = {m.anymail_status.message_id for m in batch}  # type: ignore[attr-defined]
    assert len(observed[4]) == 6
    assert all(alias == "mailgun" and message_id not in postmark_ids and code != 200
               for _, alias, message_id, code in observed[4])  # fmt: skip
    assert observed[4] == observed[1]
