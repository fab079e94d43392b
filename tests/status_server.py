"""The fake status page server and document builders, for the suite's tests:
they live in :mod:`mailrouter.testing.statuspage` (public, so users can
rehearse status pages too)."""

from mailrouter.testing.statuspage import (
    CURRENT_EVENTS,
    SERVICES,
    SORRY_COMPONENTS,
    SORRY_NOTICES,
    SORRY_STATUS,
    SUMMARY,
    Page,
    StatusPageServer,
    aws_event,
    aws_health,
    notice,
    postmark,
    postmark_legacy,
    rehearsal_pages,
    sorry,
    statuspage,
)

__all__ = [
    "CURRENT_EVENTS", "SERVICES", "SORRY_COMPONENTS", "SORRY_NOTICES", "SORRY_STATUS", "SUMMARY",
    "Page", "StatusPageServer", "aws_event", "aws_health", "notice", "postmark",
    "postmark_legacy", "rehearsal_pages", "sorry", "statuspage",
]
