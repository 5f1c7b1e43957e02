"""One TLS-only Redis Cluster for every test here (tests/support/tls_cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from support.acl_state import fresh_acl_state  # noqa: F401  (autouse)
from support.tls_cluster import TlsCluster

from channels_fleet.layers import RedisClusterChannelLayer


@pytest.fixture(scope="package")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    """3 primaries, a replica each: TLS only, the documented users, the default user off."""
    cluster = TlsCluster(tmp_path_factory.mktemp("tls-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def layers() -> AsyncIterator[list[RedisClusterChannelLayer]]:
    """Layers a test made, closed after it."""
    made: list[RedisClusterChannelLayer] = []
    yield made
    for layer in made:
        await layer.close_pools()
