"""A RedisClusterChannelLayer on each deployment shape (single Redis and Cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from channels_fleet.layers import RedisClusterChannelLayer

LayerFactory = Callable[..., RedisClusterChannelLayer]


@pytest.fixture
async def make_layer(redis_hosts: list[str]) -> AsyncIterator[LayerFactory]:
    """Build layers on ``redis_hosts`` (any config); each is flushed and closed afterwards."""
    made: list[RedisClusterChannelLayer] = []

    def make(**config: Any) -> RedisClusterChannelLayer:
        config.setdefault("hosts", redis_hosts)
        layer = RedisClusterChannelLayer(**config)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.flush()
        await layer.close_pools()


@pytest.fixture
async def layer(make_layer: LayerFactory) -> RedisClusterChannelLayer:
    return make_layer(expiry=10, capacity=50)
