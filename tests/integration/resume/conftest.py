"""Fixtures of the resumable-session tests: real interfaces (with CHANNELS_FLEET_RESUME_KEY)
and workers of the split test project on the real Redis Cluster, every process killed when its
test ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.cluster import RedisCluster
from support import resume_session
from support.split import split_stack

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.stack import FleetStack
from channels_fleet.layers import RedisClusterChannelLayer


@pytest.fixture(scope="module")
def fleet_factory(
    redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetStack]:
    fleet = split_stack(redis_cluster.urls[:3], tmp_path_factory.mktemp("resume"))
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def fleet(fleet_factory: FleetStack) -> Iterator[FleetStack]:
    """Workers share the cluster's fleet.connect with every other test: none outlives its test."""
    try:
        yield fleet_factory
    finally:
        fleet_factory.stop()


@pytest.fixture
def redis(redis_cluster: LocalRedis) -> Iterator[RedisCluster]:
    """The consumers' records (SessionConsumer writes them to the cluster)."""
    client = RedisCluster.from_url(redis_cluster.urls[0])
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def project_layer(redis_cluster: LocalRedis) -> AsyncIterator[RedisClusterChannelLayer]:
    """The test project's channel layer, to group_send to a consumer's group from here."""
    layer = RedisClusterChannelLayer(hosts=redis_cluster.urls[:3], prefix="splitproj")
    try:
        yield layer
    finally:
        await layer.close_pools()


@pytest.fixture(autouse=True)
async def close_sockets() -> AsyncIterator[None]:
    yield
    socks, resume_session.OPEN[:] = list(resume_session.OPEN), []
    await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)
