"""Fault-control and observation API shared by the fake servers (internal module).

:class:`FaultServer` holds what :class:`~mailrouter.testing.FaultySMTPServer`
and :class:`~mailrouter.testing.FakeESPServer` have in common: the public
fault controls (backed by a :class:`~mailrouter.testing._faults.FaultPlan`),
the recorded messages, connection counter and handler errors, and the locks
guarding them.  Subclasses supply the transport: :meth:`FaultServer.start`,
:meth:`FaultServer.stop`, ``_is_running()`` and ``_sync_listener()``, plus any
extra counters (cleared by overriding ``_reset_locked()``).  What one
*transaction* is (and so what one schedule entry or one unit of an
``accept_n_then`` budget counts) is documented by each subclass.

Locking, shared with the subclasses:

* ``_lock`` guards ``_messages``, ``_connections_opened``, ``_errors`` and the
  subclasses' own counters; ``_changed`` is a condition on it, notified
  whenever messages are recorded (see :meth:`FaultServer.wait_for`).
* ``_control`` (an ``RLock``) serialises start/stop and mode switches, i.e.
  every change to the listener.  Never acquire it while holding ``_lock``.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from enum import StrEnum
from types import TracebackType
from typing import Generic, Self, TypeVar

from ._faults import FaultPlan

#: The server's fault modes: SMTPFault or ESPFault.
FaultT = TypeVar("FaultT", bound=StrEnum)
#: What the server records per message: ReceivedMessage or ReceivedESPMessage.
RecordT = TypeVar("RecordT")


class FaultServer(ABC, Generic[FaultT, RecordT]):
    """Base of the fake servers: fault control, observations, context manager.

    All public attributes and methods are thread-safe; collections are
    returned as snapshots.
    """

    def __init__(self, plan: FaultPlan[FaultT]) -> None:
        self._plan = plan
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._messages: list[RecordT] = []
        self._connections_opened = 0
        self._errors: list[BaseException] = []
        # Serialises start/stop/mode switches (listener changes).  Re-entrant:
        # lifecycle code calls itself while holding it (start() -> stop()).
        self._control = threading.RLock()

    # ------------------------------------------------------------------
    # Transport hooks
    # ------------------------------------------------------------------

    @abstractmethod
    def start(self) -> Self:
        """Bind and start serving; return ``self``."""

    @abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection and join the server threads."""

    @abstractmethod
    def _is_running(self) -> bool:
        """Whether the server is started (caller holds ``_control``)."""

    @abstractmethod
    def _sync_listener(self) -> None:
        """Make the listener match the base mode (caller holds ``_control``)."""

    def _reset_locked(self) -> None:
        """Clear subclass counters in :meth:`reset` (caller holds ``_lock``)."""

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is started (also true in ``refuse`` mode)."""
        with self._control:
            return self._is_running()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------
    # Fault control
    # ------------------------------------------------------------------

    @property
    def mode(self) -> FaultT:
        """The base fault mode.  Setting it cancels a pending :meth:`accept_n_then`.

        Setting ``refuse`` stops listening before returning; setting anything
        else while refusing re-binds the same port before returning
        (``OSError`` if that fails).
        """
        return self._plan.mode

    @mode.setter
    def mode(self, value: FaultT | str) -> None:
        with self._control:
            self._plan.set_mode(value)
            self._sync_listener()

    def accept_n_then(self, n: int, mode: FaultT | str) -> None:
        """Serve the next ``n`` transactions normally, then switch the base mode to ``mode``.

        One transaction is what the class docstring says (it is counted when
        it starts, so concurrent clients cannot get more than ``n`` through).
        ``n == 0`` switches immediately.  Schedule entries take precedence and
        do not spend the budget.
        """
        with self._control:
            self._plan.accept_n_then(n, mode)
            self._sync_listener()

    @property
    def schedule(self) -> tuple[FaultT, ...]:
        """Remaining per-transaction modes (a snapshot; assign a list to replace it).

        Entries are consumed one per client attempt (see the class docstring);
        with the schedule empty the base :attr:`mode` applies.  ``refuse``
        cannot be scheduled (``ValueError``).
        """
        return self._plan.schedule

    @schedule.setter
    def schedule(self, values: Iterable[FaultT | str]) -> None:
        self._plan.set_schedule(values)

    @property
    def applied_modes(self) -> list[FaultT]:
        """Every fault resolved so far, in order (one per consumed attempt)."""
        return self._plan.applied

    # ------------------------------------------------------------------
    # Observations
    # ------------------------------------------------------------------

    @property
    def messages(self) -> list[RecordT]:
        """Snapshot of accepted messages, in acceptance order."""
        with self._lock:
            return list(self._messages)

    @property
    def connections_opened(self) -> int:
        """Number of TCP connections accepted so far."""
        with self._lock:
            return self._connections_opened

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions raised while serving clients (should stay empty)."""
        with self._lock:
            return list(self._errors)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[RecordT]:
        """Block until :attr:`messages` has at least ``count`` entries; return them.

        Raises ``TimeoutError`` if that does not happen within ``timeout``
        seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} messages, got {len(self._messages)} after {timeout}s"
                    )
                self._changed.wait(remaining)
            return list(self._messages)

    def reset(self) -> None:
        """Forget recorded messages, counters, errors and applied modes.

        Configuration (the mode, the schedule and any server settings) is
        left alone.
        """
        with self._lock:
            self._messages.clear()
            self._connections_opened = 0
            self._errors.clear()
            self._reset_locked()
        self._plan.clear_applied()

    # ------------------------------------------------------------------
    # Recording (for subclasses' handlers)
    # ------------------------------------------------------------------

    def _record_messages(self, records: Iterable[RecordT]) -> None:
        """Append accepted messages and wake :meth:`wait_for` callers."""
        with self._changed:
            self._messages.extend(records)
            self._changed.notify_all()

    def _record_error(self, exc: BaseException) -> None:
        """Remember an unexpected handler exception (a server bug)."""
        with self._lock:
            self._errors.append(exc)
