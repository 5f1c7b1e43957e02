"""The session registry (relay/sessions.py) on a real Redis Cluster: one key per session, spread
over the shards by its own hash tag; put, get, delete, and the TTL that clears a dead worker's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.relay.session_items import session_key
from channels_fleet.relay.sessions import SessionEntry, SessionRegistry

pytestmark = pytest.mark.timeout(30)

PREFIX = "sessreg"


@pytest.fixture
async def layer(redis_cluster: LocalRedis) -> AsyncIterator[Any]:
    layer = RedisClusterChannelLayer(hosts=redis_cluster.urls[:3], prefix=PREFIX)
    yield layer
    await layer.close_pools()


def ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


async def test_put_get_delete__each_session_its_own_key(layer: Any) -> None:
    registry = SessionRegistry(layer, PREFIX)
    sessions = ids(20)  # 20 hash tags: every shard holds some
    for n, session_id in enumerate(sessions):
        await registry.put(session_id, SessionEntry("fleet.worker.w!1", f"c.{n}~1",
                                                    "fleet.iface.a!1"), ttl=30.0)
    assert await registry.get(sessions[3]) == SessionEntry("fleet.worker.w!1", "c.3~1",
                                                           "fleet.iface.a!1")
    # A move (a resume, a detach) overwrites the entry.
    await registry.put(sessions[3], SessionEntry("fleet.worker.w!2", "c.3~2", ""), ttl=30.0)
    assert await registry.get(sessions[3]) == SessionEntry("fleet.worker.w!2", "c.3~2", "")
    for session_id in sessions:
        await registry.delete(session_id)
    assert [await registry.get(s) for s in sessions] == [None] * 20
    await registry.delete(sessions[0])  # deleting what is gone is no error


async def test_the_entry_expires_with_its_ttl(layer: Any) -> None:
    registry = SessionRegistry(layer, PREFIX)
    (session_id,) = ids(1)
    await registry.put(session_id, SessionEntry("w", "c~1", "i"), ttl=0.3)
    key = session_key(session_id, PREFIX)
    ttl = await layer.command(key, "PTTL", key)
    assert 0 < ttl <= 300
    assert await registry.get(session_id) is not None
    await asyncio.sleep(0.5)
    assert await registry.get(session_id) is None


async def test_an_unreadable_entry_is_no_session(layer: Any) -> None:
    registry = SessionRegistry(layer, PREFIX)
    (session_id,) = ids(1)
    key = session_key(session_id, PREFIX)
    await layer.command(key, "SET", key, "not json", "PX", 30000)
    assert await registry.get(session_id) is None
    await registry.delete(session_id)
