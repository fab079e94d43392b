"""Thread-safe fault bookkeeping shared by the fake servers (internal module).

Both :class:`~mailrouter.testing.FaultySMTPServer` and
:class:`~mailrouter.testing.FakeESPServer` decide, once per *transaction*
(an SMTP ``MAIL FROM`` or an HTTP send request), which fault to inject.  The
rules are identical for both servers, so they live here:

1. If the *schedule* is non-empty, its head is consumed and used.
2. Otherwise the *base mode* is used.  If an ``accept_n_then(n, mode)``
   budget is active, the base mode is the "ok" mode and every resolved
   transaction spends one unit of the budget; the transaction that spends the
   last unit is still served in the ok mode, and the base mode becomes the
   target mode right after it.

Every resolution is appended to ``applied`` so tests can correlate client
outcomes with the faults actually injected.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from enum import StrEnum
from typing import Generic, TypeVar

F = TypeVar("F", bound=StrEnum)


class FaultPlan(Generic[F]):
    """Base mode + per-transaction schedule + ``accept_n_then`` budget.

    All methods are safe to call from any thread.  The plan never performs
    side effects itself (such as closing a listening socket); callers learn
    from the return values when the base mode changed and act on it.
    """

    def __init__(
        self,
        fault_type: type[F],
        initial: F | str,
        ok: F,
        not_schedulable: frozenset[F],
    ) -> None:
        self._type = fault_type
        self._ok = ok
        self._not_schedulable = not_schedulable
        # A plain Lock is enough: no method calls back into the plan while
        # holding it.
        self._lock = threading.Lock()
        self._mode: F = self.coerce(initial)
        self._schedule: deque[F] = deque()
        self._budget: int | None = None
        self._then: F | None = None
        self._applied: list[F] = []

    def coerce(self, value: F | str) -> F:
        """Return ``value`` as a member of the fault enum (``ValueError`` if unknown)."""
        return self._type(value)

    @property
    def mode(self) -> F:
        """The current base mode."""
        with self._lock:
            return self._mode

    def set_mode(self, value: F | str) -> F:
        """Set the base mode, cancelling any pending ``accept_n_then``."""
        mode = self.coerce(value)
        with self._lock:
            self._mode = mode
            self._budget = None
            self._then = None
        return mode

    def accept_n_then(self, n: int, value: F | str) -> F:
        """Serve the next ``n`` transactions in the ok mode, then switch to ``value``.

        Returns the base mode in force after the call (``value`` itself when
        ``n == 0``).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        target = self.coerce(value)
        with self._lock:
            if n == 0:
                self._mode = target
                self._budget = None
                self._then = None
            else:
                self._mode = self._ok
                self._budget = n
                self._then = target
            return self._mode

    @property
    def schedule(self) -> tuple[F, ...]:
        """Snapshot of the not-yet-consumed schedule entries."""
        with self._lock:
            return tuple(self._schedule)

    def set_schedule(self, values: Iterable[F | str]) -> None:
        """Replace the schedule (validating every entry first)."""
        modes = [self.coerce(v) for v in values]
        bad = [m for m in modes if m in self._not_schedulable]
        if bad:
            raise ValueError(
                f"{', '.join(sorted({m.value for m in bad}))} cannot be scheduled "
                "per transaction; set it as the base mode instead"
            )
        with self._lock:
            self._schedule = deque(modes)

    def take_phase_fault(self, phase: frozenset[F]) -> F | None:
        """Resolve a fault that acts *before* a transaction starts.

        Used for faults such as an SMTP greeting failure: if the schedule head
        is in ``phase`` it is consumed and returned; if the schedule is empty
        and the base mode is in ``phase`` the base mode is returned (the base
        mode is never consumed).  Otherwise nothing is consumed and ``None``
        is returned, leaving the decision to :meth:`next_transaction`.
        """
        with self._lock:
            if self._schedule:
                if self._schedule[0] in phase:
                    mode = self._schedule.popleft()
                    self._applied.append(mode)
                    return mode
                return None
            if self._mode in phase:
                self._applied.append(self._mode)
                return self._mode
            return None

    def next_transaction(self) -> tuple[F, F | None]:
        """Resolve the mode for one transaction.

        Returns ``(mode, switched_to)`` where ``switched_to`` is the new base
        mode when this call exhausted an ``accept_n_then`` budget (so the
        caller can apply side effects such as closing the listener), else
        ``None``.
        """
        with self._lock:
            switched: F | None = None
            if self._schedule:
                mode = self._schedule.popleft()
            else:
                mode = self._mode
                if self._budget is not None:
                    self._budget -= 1
                    if self._budget <= 0:
                        assert self._then is not None
                        self._mode = switched = self._then
                        self._budget = None
                        self._then = None
            self._applied.append(mode)
            return mode, switched

    @property
    def applied(self) -> list[F]:
        """Snapshot of every resolved fault, in order."""
        with self._lock:
            return list(self._applied)

    def clear_applied(self) -> None:
        """Forget the resolution history."""
        with self._lock:
            self._applied.clear()
