"""Fixtures of the split tests: real processes on the real Redis Cluster, killed at teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.split import split_stack

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.stack import FleetStack


def cluster_urls(cluster: LocalRedis) -> list[str]:
    return cluster.urls[:3]


@pytest.fixture(scope="module")
def fleet_factory(
    redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetStack]:
    fleet = split_stack(cluster_urls(redis_cluster), tmp_path_factory.mktemp("fleet"))
    try:
        yield fleet
    finally:
        fleet.stop()
