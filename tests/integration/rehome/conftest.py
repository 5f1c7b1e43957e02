"""Fixtures of the re-homing tests: real interface and worker processes on the real Redis
Cluster (the split test project), every process killed when its test ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from support import rolling
from support.split import split_stack

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.stack import FleetStack


@pytest.fixture(scope="module")
def fleet_factory(
    redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetStack]:
    fleet = split_stack(redis_cluster.urls[:3], tmp_path_factory.mktemp("rehome"))
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


@pytest.fixture(autouse=True)
async def close_sockets() -> AsyncIterator[None]:
    yield
    socks, rolling.OPEN[:] = list(rolling.OPEN), []
    await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)
