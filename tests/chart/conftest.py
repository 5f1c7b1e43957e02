import pytest

from .helm import helm_binary


def pytest_collection_modifyitems(items):
    if helm_binary() is None:
        # make test installs helm first (make helm); a bare pytest run without it says how.
        skip = pytest.mark.skip(reason="helm not found: run `make helm`")
        for item in items:
            if "tests/chart/" in str(item.fspath):
                item.add_marker(skip)
