"""System tests: the daemon as a subprocess, a real broker, kills and restarts.  All slow."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/system/" in str(item.path):
            item.add_marker(pytest.mark.slow)
