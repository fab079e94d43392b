import pytest

from mailrouter.testing import keep_routing


@pytest.fixture(autouse=True)
def _keep_routing():  # type: ignore[no-untyped-def]
    with keep_routing():
        yield
