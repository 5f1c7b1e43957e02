"""Fixtures of the re-homing tests: real interface and worker processes on the real Redis
Cluster (the split tests' helpers), every process killed when its test ends."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

SPLIT = Path(__file__).resolve().parent.parent / "split"
if str(SPLIT) not in sys.path:
    sys.path.insert(0, str(SPLIT))

import rolling  # noqa: E402
from split_fleet import Fleet  # noqa: E402

from channels_fleet.devcluster import LocalRedis  # noqa: E402


@pytest.fixture(scope="module")
def fleet_factory(
    redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    fleet = Fleet(redis_cluster.urls[:3], True, tmp_path_factory.mktemp("rehome"))
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def fleet(fleet_factory: Fleet) -> Iterator[Fleet]:
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
