"""Local, controllable, fault-injecting servers for tests, demos and benchmarks.

* :class:`FaultySMTPServer` -- a small SMTP server (asyncio, one thread) with
  fault modes from :class:`SMTPFault`; records :class:`ReceivedMessage`.
* :class:`FakeESPServer` -- a fake Mailgun + Postmark HTTP API with fault modes
  from :class:`ESPFault`; records :class:`ReceivedESPMessage`.

Both bind ``127.0.0.1`` on a free port by default, run in background daemon
threads, are context managers, and leave no thread behind after ``stop()``.
Standard library only: importing this package adds no runtime dependency.
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
