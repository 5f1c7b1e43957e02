"""Real Redis servers for the whole test session: a 3-master + 3-replica cluster and a single node.

Both are started once per session on free loopback ports (never 6379) and always stopped:
by the finalizer, and if pytest itself is killed, by PR_SET_PDEATHSIG in each child.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels_fleet.dev.cluster import LocalRedis

# The shared relay round trip's asserts report their values as a test module's do.
pytest.register_assert_rewrite("support.relay_round_trip")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """A real Redis Cluster: 3 masters, each with one replica."""
    local = LocalRedis(tmp_path_factory.mktemp("cluster"), masters=3, replicas=1).start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def redis_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """A real single Redis node."""
    local = LocalRedis(tmp_path_factory.mktemp("single"), masters=1, replicas=0).start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(params=["single", "cluster"])
def redis_hosts(request: pytest.FixtureRequest) -> list[str]:
    """Layer hosts for each deployment shape; tests using it run on both."""
    local: LocalRedis = request.getfixturevalue(f"redis_{request.param}")
    return local.urls[:3] if local.is_cluster else local.urls


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # Tests never touch the machine's own Redis on 6379 by accident.
    os.environ.pop("CHANNELS_FLEET_REDIS_URL", None)
