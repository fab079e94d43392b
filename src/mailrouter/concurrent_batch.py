"""Send one ``send_messages()`` batch over several worker threads.

Used by ``RouterBackend`` when its ``concurrency`` option is above 1. What
the caller sees is exactly what the serial path produces: every message gets
the same attributes, the same signals fire in message order (always from the
calling thread, so receivers that use the database or thread-locals behave
as with serial sending), and the return value and aggregated error are the
same. Only the attempts themselves (the I/O) run in the workers.

``attempt_failed`` receivers run on the calling thread once the message's
failover has ended, in attempt order; each sees the message exactly as that
failed attempt left it (as in serial mode): the worker takes a snapshot at
the failure, the caller puts it on the message for the receivers, then puts
the final state back.

- Each worker has its own leaf backends and connections (``MailerPool``):
  Django's and Anymail's backends are not safe to share between threads.
- Health (the router's ``HealthView``) is shared behind a lock; rate limits
  and "this mailer is down for the rest of the batch" are shared as well.
- A message whose candidates may include a router (a nested router alias,
  or a legacy ``connection`` object, which belongs to the caller) is sent by
  the calling thread itself, as in serial mode: nesting is tracked per thread.
- Workers live for one batch and are joined before ``send_messages()``
  returns (or raises), so no thread outlives the call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.core.mail import EmailMessage
from django.db import connections

from .delivery import BatchState, DeliveryResult, Dispatcher, HealthView
from .errors import FailedMessage
from .outcomes import Attempt
from .pool import MailerPool
from .routing import Candidate, Selection, may_reach_a_router
from .runtime import RouterRuntime
from .snapshot import MessageSnapshot


class BatchRouter(Protocol):
    """The per-message steps of ``RouterBackend`` that run in the caller's thread."""

    def _select(self, message: EmailMessage) -> Selection | None: ...

    def _unroutable(self, message: EmailMessage, selection: Selection) -> FailedMessage: ...

    def _ordered(self, message: EmailMessage, selection: Selection) -> tuple[Candidate, ...]: ...

    def _deliver(
        self, message: EmailMessage, candidates: tuple[Candidate, ...], batch: BatchState
    ) -> DeliveryResult: ...

    def _finish(
        self, message: EmailMessage, selection: Selection, result: DeliveryResult
    ) -> FailedMessage | None: ...

    def _attempt_failed(self, message: EmailMessage, attempt: Attempt) -> None: ...

logger = logging.getLogger("mailrouter")


class LockedHealth:
    """A ``HealthView`` shared by worker threads (the monitor is not thread-safe)."""

    def __init__(self, health: HealthView) -> None:
        self._health = health
        self._lock = threading.RLock()

    def begin_batch(self, aliases: Collection[str]) -> None:
        with self._lock:
            self._health.begin_batch(aliases)

    def order(self, candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
        with self._lock:
            return self._health.order(candidates)

    def skip_reason(self, alias: str) -> str | None:
        with self._lock:
            return self._health.skip_reason(alias)

    def record(self, alias: str, attempt: Attempt) -> None:
        with self._lock:
            self._health.record(alias, attempt)

    def end_batch(self) -> None:
        with self._lock:
            self._health.end_batch()


@dataclass(frozen=True, slots=True)
class Job:
    """One message to deliver; ``inline`` jobs are delivered by the caller's thread."""

    message: EmailMessage
    candidates: tuple[Candidate, ...]
    selection: Selection
    inline: bool = False


#: A failed attempt and the message as that attempt left it.
FailedAttempt = tuple[Attempt, MessageSnapshot]


@dataclass(slots=True)
class _Done:
    result: DeliveryResult | None
    #: Failed attempts in the order they happened, reported by the caller's thread.
    failed: list[FailedAttempt]
    error: BaseException | None = None


class AttemptLog:
    """A worker dispatcher's ``on_attempt_failed``: collects instead of
    reporting, with what the receivers must see (the failover goes on and
    the next mailer's answer replaces this one's on the message)."""

    def __init__(self) -> None:
        self.failed: list[FailedAttempt] = []

    def __call__(self, message: EmailMessage, attempt: Attempt) -> None:
        self.failed.append((attempt, MessageSnapshot(message)))

    def take(self) -> list[FailedAttempt]:
        failed, self.failed = self.failed, []
        return failed


def run_batch(
    jobs: Sequence[Job | None],
    workers: Sequence[tuple[Dispatcher, AttemptLog]],
    deliver_inline: Callable[[EmailMessage, tuple[Candidate, ...], BatchState], DeliveryResult],
    batch: BatchState,
    finish: Callable[[int, DeliveryResult, list[FailedAttempt]], None],
) -> None:
    """Deliver ``jobs`` over ``workers``; call ``finish(index, result, failed
    attempts)`` in the caller's thread, in job order. A None job is skipped
    (the caller already finished that message)."""
    done: list[_Done | None] = [None] * len(jobs)
    pending = [index for index, job in enumerate(jobs) if job is not None and not job.inline]
    position = 0
    ready = threading.Condition()
    stop = False

    def work(dispatcher: Dispatcher, log: AttemptLog) -> None:
        try:
            take_jobs(dispatcher, log)
        finally:
            # A leaf that uses the database (a queueing backend) opened this
            # thread's own connections; the thread ends here, so must they.
            try:
                connections.close_all()
            except Exception as error:
                logger.warning("closing a worker's database connections "
                               "failed: %s", type(error).__name__)

    def take_jobs(dispatcher: Dispatcher, log: AttemptLog) -> None:
        nonlocal position, stop
        while True:
            with ready:
                if stop or position >= len(pending):
                    return
                index = pending[position]
                position += 1
            job = jobs[index]
            assert job is not None
            try:
                outcome = _Done(dispatcher.deliver(job.message, job.candidates, batch), log.take())
            except BaseException as error:  # handed to the caller's thread, raised there
                outcome = _Done(None, log.take(), error)
            with ready:
                done[index] = outcome
                if outcome.error is not None:
                    # As in a serial batch, nothing after a crash is started.
                    stop = True
                ready.notify_all()

    threads = [
        threading.Thread(target=work, args=worker, name=f"mailrouter-worker-{number}", daemon=True)
        for number, worker in enumerate(workers[: max(1, min(len(workers), len(pending)))])
    ]
    started: list[threading.Thread] = []
    try:
        for thread in threads:
            thread.start()
            started.append(thread)
        for index, job in enumerate(jobs):
            if job is None:
                continue
            if job.inline:
                # The caller's own dispatcher reports failed attempts as they happen.
                finish(index, deliver_inline(job.message, job.candidates, batch), [])
                continue
            with ready:
                while done[index] is None:
                    ready.wait()
                outcome = done[index]
            assert outcome is not None
            if outcome.error is not None:
                raise outcome.error
            assert outcome.result is not None
            finish(index, outcome.result, outcome.failed)
    finally:
        with ready:
            stop = True
        for thread in started:
            thread.join()


class ConcurrentSender:
    """The worker side of a router with ``concurrency`` > 1: one dispatcher and
    leaf pool per worker thread (see ``mailrouter.concurrent_batch``)."""

    def __init__(self, router: BatchRouter, main: Dispatcher, runtime: RouterRuntime) -> None:
        self._router = router
        # Inline jobs run on the caller's dispatcher while the workers run:
        # everyone uses health through the lock.
        self._health = LockedHealth(main.health)
        main.health = self._health
        self._workers: list[tuple[Dispatcher, AttemptLog]] = []
        self._pools: list[MailerPool] = []
        config = runtime.config
        for _ in range(config.concurrency):
            log = AttemptLog()
            pool = MailerPool(config, runtime.table)
            self._pools.append(pool)
            self._workers.append((
                Dispatcher(
                    config, pool, runtime.redact, log, health=self._health, limiter=main.limiter,
                ),
                log,
            ))

    @staticmethod
    def can_send(messages: list[EmailMessage]) -> bool:
        """More than one message, each object once (a message object listed
        twice is sent twice, one after the other, as in serial mode)."""
        return len(messages) > 1 and len({id(message) for message in messages}) == len(messages)

    def send(self, messages: list[EmailMessage], batch: BatchState) -> list[FailedMessage | None]:
        router = self._router
        outcomes: list[FailedMessage | None] = [None] * len(messages)
        jobs: list[Job | None] = []
        for index, message in enumerate(messages):
            selection = router._select(message)
            if selection is None:
                jobs.append(None)
            elif selection.problem is not None:
                outcomes[index] = router._unroutable(message, selection)
                jobs.append(None)
            else:
                candidates = router._ordered(message, selection)
                # A legacy connection object is the caller's; a nested router
                # needs the caller's routing path (a context variable).
                jobs.append(Job(message, candidates, selection, may_reach_a_router(candidates)))

        def finish(index: int, result: DeliveryResult, failed: list[FailedAttempt]) -> None:
            message = messages[index]
            if failed:
                # As in a serial batch, whatever receivers do to the message is undone.
                final = MessageSnapshot(message)
                for attempt, seen in failed:
                    seen.restore(message)
                    router._attempt_failed(message, attempt)
                final.restore(message)
            job = jobs[index]
            assert job is not None
            outcomes[index] = router._finish(message, job.selection, result)

        run_batch(jobs, self._workers, router._deliver, batch, finish)
        return outcomes

    def close(self) -> None:
        for pool in self._pools:
            pool.close_all()
