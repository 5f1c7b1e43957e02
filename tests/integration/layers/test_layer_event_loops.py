"""One layer used from several event loops, as ``async_to_sync`` from plain sync code does.

Each ``async_to_sync`` call from a thread without a running loop runs on a new loop (closed
after it); threads run such loops side by side. channels_redis documents and tests this
(``test_double_receive``); it refuses two loops receiving at once, we serve both.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import async_to_sync

from channels_fleet.layers import RedisClusterChannelLayer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sync_layer(redis_hosts: list[str]):
    """A layer for sync tests; flushed (on a loop of its own) afterwards."""
    layer = RedisClusterChannelLayer(hosts=redis_hosts, capacity=1000, expiry=30)
    yield layer
    async_to_sync(layer.flush)()


async def test_receive__foreign_client_prefix_is_refused_at_once(make_layer):
    layer, other = make_layer(), make_layer()
    foreign = await other.new_channel()
    for channel in ["not-client-prefix!local_part", foreign, f"specific.{other.client_prefix}!x"]:
        with pytest.raises(AssertionError, match="Wrong client prefix"):
            await asyncio.wait_for(layer.receive(channel), 1)
        with pytest.raises(AssertionError, match="Wrong client prefix"):
            layer.receive_key(channel)
    # Its own names and shared names are still fine.
    own = await layer.new_channel("w")
    await layer.send(own, {"n": 1})
    assert await layer.receive(own) == {"n": 1}


def test_receive__foreign_client_prefix_is_refused_through_async_to_sync(sync_layer):
    start = time.monotonic()
    with pytest.raises(AssertionError, match="Wrong client prefix"):
        async_to_sync(sync_layer.receive)("not-client-prefix!local_part")
    assert time.monotonic() - start < 1.0
