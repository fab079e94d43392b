"""The suite's status page server: ``mailrouter.testing.status`` (it is also
what ``python -m mailrouter.testing statuspage`` serves)."""

from mailrouter.testing.status import (
    SERVICES,
    SUMMARY,
    Page,
    StatusPageServer,
    postmark,
    statuspage,
)

__all__ = ["SERVICES", "SUMMARY", "Page", "StatusPageServer", "postmark", "statuspage"]
