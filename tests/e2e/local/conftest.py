"""The local stack of processes for the e2e scenarios, one per module.

Module-scoped on the session's Redis Cluster: every test stack on that cluster shares the work
queue ``fleet.connect``, so no worker of this module may outlive it (teardown kills them all).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from channels_fleet.devcluster import LocalRedis

from .local_stack import LocalStack


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
