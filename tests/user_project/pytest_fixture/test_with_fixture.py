"""The shop's expectations under pytest-django; conftest.py applies keep_routing."""

import pytest
from shop import expectations


@pytest.mark.parametrize("check", expectations.ALL, ids=lambda check: check.__name__)
def test_routing(check) -> None:  # type: ignore[no-untyped-def]
    check()
