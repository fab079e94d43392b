"""ESP status pages as a health source, polled off the hot path.

- ``sources``: what a status document says (Statuspage v2, Postmark), as a
  :class:`~mailrouter.status_pages.sources.Reading`; small documented classes.
- ``fetch``: one bounded HTTP GET (timeout, size cap, no cross-host redirect,
  ETag).
- ``settings``: the router options ``status_pages`` and
  ``status_webhook_token`` → validated :class:`StatusPage` values.
- ``record``: the page state as stored in the health cache, and its effect
  on routing (skip, demote, none).
- ``refresh``: fetch + store + announce, the fleet-wide refresh lease, and
  the per-process background refresher thread.
- ``health_source``: the pages as a health source of
  ``mailrouter.health.sources`` (registered on import of this package).

Unknown is never down: a page that cannot be fetched or understood has no
effect on routing.
"""

from . import health_source  # noqa: F401  (registers itself)
