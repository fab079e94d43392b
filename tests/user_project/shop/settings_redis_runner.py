from .settings_redis import *  # noqa: F403

TEST_RUNNER = "mailrouter.testing.RoutingTestRunner"
