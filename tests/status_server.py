"""The fake status page server and document builders, for the suite's tests:
they live in :mod:`mailrouter.testing.statuspage` (public, so users can
rehearse status pages too)."""

from mailrouter.testing.statuspage import *  # noqa: F403
from mailrouter.testing.statuspage import __all__ as __all__
