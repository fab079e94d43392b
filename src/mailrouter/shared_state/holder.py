"""Who holds a claim or a lease in the shared cache (shown by ``status``)."""

from __future__ import annotations

import os
import socket
import threading


def holder_id() -> str:
    """Host, process and thread: unique among the fleet's live holders."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
