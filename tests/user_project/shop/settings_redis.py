"""The shop in production shape: breakers, drains and rate budgets shared in
Redis (SHOP_REDIS_URL), as the health guide configures them. Its tests must
neither see nor change what is stored there."""

import os

from mailrouter.testing.redis import redis_cache_settings

from .settings import *  # noqa: F403
from .settings import LEAVES, ROUTER_OPTIONS

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "health": redis_cache_settings(os.environ["SHOP_REDIS_URL"]),
}
ROUTER_OPTIONS = {**ROUTER_OPTIONS, "health": {**ROUTER_OPTIONS["health"], "cache": "health"},
                  "rate_limits": {"primary": "100/s"}}

if "MAILERS" in globals():
    MAILERS = {
        "default": {"BACKEND": "mailrouter.backend.RouterBackend", "OPTIONS": ROUTER_OPTIONS},
        **LEAVES,
    }
else:
    MAILROUTER = {"MAILERS": LEAVES, "OPTIONS": ROUTER_OPTIONS}
