"""State shared by the fleet (a Django cache) and kept per process.

- ``fallback``: :class:`~mailrouter.shared_state.fallback.CacheFallback`, "a
  shared cache with a per-process fallback": one retry interval, one
  throttled "unreachable" warning. Health, status pages and rate limits all
  go through it.
- ``registry``: every per-process cache that belongs to one configuration
  registers its reset here; :func:`~mailrouter.shared_state.registry.reset`
  runs them all, on any change of one set of watched settings.
- ``holder``: who holds a claim or lease (host, process, thread).

Kept free of imports at package level: the modules import only Django.
"""
