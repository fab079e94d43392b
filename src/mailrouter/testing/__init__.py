"""Local, controllable, fault-injecting servers for tests, demos and benchmarks.

* :class:`FaultySMTPServer` -- a small SMTP server (asyncio, one thread) with
  fault modes from :class:`SMTPFault`; records :class:`ReceivedMessage`.
* :class:`FakeESPServer` -- a fake Mailgun + Postmark + Amazon SES HTTP API
  with fault modes from :class:`ESPFault`; records :class:`ReceivedESPMessage`.

Both bind ``127.0.0.1`` on a free port by default, run in background daemon
threads, are context managers, and leave no thread behind after ``stop()``.
Standard library only: importing this package adds no runtime dependency.

For routing in your own test suite (see ``mailrouter.testing.routing``, loaded
on first use): :func:`keep_routing`, :class:`RoutingTestRunner`
(``TEST_RUNNER = "mailrouter.testing.RoutingTestRunner"``), :func:`mailer_fails`
and :class:`LocmemMailer`.

Submodules, imported on their own: ``mailrouter.testing.redis``
(``RedisServer``, a throw-away ``redis-server`` for fleet-wide health),
``mailrouter.testing.statuspage`` (``StatusPageServer``, a fake ESP status
page server serving Statuspage, Sorry/Postmark and AWS Health documents) and
``mailrouter.testing.settings`` (``router_settings()`` / ``mail_settings()``:
the router configured as a project does, in either settings style).

``python -m mailrouter.testing smtp|esp|statuspage`` runs the servers as a
command, to rehearse failover by hand (``mailrouter.testing.command``).
"""

from typing import Any

from ..shared_state.registry import reset as _reset_registered
from .esp import ESPFault, FakeESPServer, ReceivedESPMessage, ReceivedRequest
from .smtp import FaultySMTPServer, ReceivedMessage, SMTPFault

_ROUTING_NAMES = (
    "KeepRouting", "LocmemMailer", "RoutingTestRunner", "keep_routing", "mailer_fails",
    "reset_routing_state",
)


def reset_state() -> None:
    """Forget all of mailrouter's per-process state: health records, drains,
    status page records and request times, rate budgets, validated routers,
    outbox options (what a change of a watched setting does)."""
    _reset_registered()


def __getattr__(name: str) -> Any:
    # Lazy: the servers are used by the demo and benchmarks without Django's
    # test machinery; these need it.
    if name in _ROUTING_NAMES:
        from . import routing

        return getattr(routing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ESPFault",
    "FakeESPServer",
    "FaultySMTPServer",
    "KeepRouting",
    "LocmemMailer",
    "ReceivedESPMessage",
    "ReceivedMessage",
    "ReceivedRequest",
    "RoutingTestRunner",
    "SMTPFault",
    "keep_routing",
    "mailer_fails",
    "reset_routing_state",
    "reset_state",
]
