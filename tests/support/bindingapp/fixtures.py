"""The real channel layer the multiplex and binding tests run on, installed as Django's default.

channels_fleet's RedisClusterChannelLayer on single Redis and on the Cluster when it is
importable; until then channels_redis on the single node (it cannot talk to a Cluster).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

try:
    from channels_fleet.layers import RedisClusterChannelLayer
except ImportError:  # Not written yet.
    RedisClusterChannelLayer = None


def layer_backend() -> str:
    if RedisClusterChannelLayer is not None:
        return "channels_fleet.layers.RedisClusterChannelLayer"
    return "channels_redis.core.RedisChannelLayer"


@pytest.fixture(name="layer")
async def layer_fixture(redis_hosts: list[str]) -> AsyncIterator[object]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    if RedisClusterChannelLayer is not None:
        backend = RedisClusterChannelLayer(hosts=redis_hosts, prefix=prefix)
    elif len(redis_hosts) > 1:
        pytest.skip("channels_redis cannot talk to a Redis Cluster; needs RedisClusterChannelLayer")
    else:
        from channels_redis.core import RedisChannelLayer

        # redis-py 8's 5 s default socket_timeout breaks channels_redis's blocking reads.
        backend = RedisChannelLayer(
            hosts=[{"address": h, "socket_timeout": None} for h in redis_hosts], prefix=prefix)
    backend.test_hosts = redis_hosts
    channel_layers.backends[DEFAULT_CHANNEL_LAYER] = backend
    try:
        yield backend
    finally:
        channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
        await backend.flush()
        close = getattr(backend, "close_pools", None) or getattr(backend, "close", None)
        if close is not None:
            await close()
