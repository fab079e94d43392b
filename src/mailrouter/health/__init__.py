"""Fleet-wide mailer health: shared circuit breakers in Django's cache.

- ``breaker``: the policy (pure, immutable values, injectable time).
- ``settings``: the router option ``health`` → ``HealthSettings``.
- ``store``: breaker state in a Django cache alias, per-process fallback.
- ``monitor``: ``HealthMonitor``, the failover loop's ``HealthView``.

Its system checks are in ``mailrouter.checks`` (``check_health_cache``).

Kept free of imports at package level so ``mailrouter.config`` can import
``mailrouter.health.settings`` without pulling in the cache machinery.
"""
