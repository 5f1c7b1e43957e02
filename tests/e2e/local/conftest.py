"""The local stack of processes for the e2e scenarios, one per module.

Module-scoped on the session's Redis Cluster: every test stack on that cluster shares the work
queue ``fleet.connect``, so no worker of this module may outlive it (teardown kills them all).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from channels_fleet.dev.cluster import LocalRedis

from .local_stack import LocalStack

#: What each scenario measured, one line each, for the terminal summary.
MEASURED: list[str] = []


@pytest.fixture(scope="module")
def local_stack(redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[LocalStack]:
    redis_cluster.wait_cluster_ok()
    stack = LocalStack(redis_cluster.urls[:3], tmp_path_factory.mktemp("e2e-local"))
    try:
        stack.start(interfaces=2, workers=1)
        yield stack
    finally:
        stack.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASURED:
        terminalreporter.section("e2e-local: what the scenarios measured")
        for line in MEASURED:
            terminalreporter.write_line(line)
