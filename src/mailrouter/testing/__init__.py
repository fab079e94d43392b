"""Local, controllable, fault-injecting servers for tests, demos and benchmarks.

* :class:`FaultySMTPServer` -- a small SMTP server (asyncio, one thread) with
  fault modes from :class:`SMTPFault`; records :class:`ReceivedMessage`.
* :class:`FakeESPServer` -- a fake Mailgun + Postmark + Amazon SES HTTP API
  with fault modes from :class:`ESPFault`; records :class:`ReceivedESPMessage`.

Both bind ``127.0.0.1`` on a free port by default, run in background daemon
threads, are context managers, and leave no thread behind after ``stop()``.
Standard library only: importing this package adds no runtime dependency.

Submodules, imported on their own: ``mailrouter.testing.redis``
(``RedisServer``, a throw-away ``redis-server`` for fleet-wide health) and
``mailrouter.testing.settings`` (``router_settings()`` / ``mail_settings()``:
the router configured as a project does, in either settings style).
"""

from .esp import ESPFault, FakeESPServer, ReceivedESPMessage, ReceivedRequest
from .smtp import FaultySMTPServer, ReceivedMessage, SMTPFault

__all__ = [
    "ESPFault",
    "FakeESPServer",
    "FaultySMTPServer",
    "ReceivedESPMessage",
    "ReceivedMessage",
    "ReceivedRequest",
    "SMTPFault",
]
