"""Heartbeat tombstones on a real Redis: an expired key alone is a Redis outage, not a death."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.relay.heartbeat import Heartbeat
from channels_fleet.relay.peer_watch import PeerWatch
from channels_fleet.relay.wire import heartbeat_key, tombstone_key


async def until(condition: Callable[[], object], timeout: float = 2.0) -> None:
    """Wait until ``condition()`` holds (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_expired_without_tombstone__re_registers__with_tombstone__abandons(
    redis_single: LocalRedis,
) -> None:
    url = redis_single.urls[0]
    client = aioredis.Redis.from_url(url)
    lost: list[str] = []
    # Beats by hand only (the thread's first is 10 s away): a key deleted below stays missing.
    beat = Heartbeat([url], "fleet.worker.t!1", interval=10, ttl=30,
                     on_lost=lambda: lost.append("lost"), prefix="t1")
    await beat.start()
    reported: list[set[str]] = []
    watch = PeerWatch(client, lambda: ["fleet.worker.t!1"], reported.append, interval=0.05,
                      grace=0.0, prefix="t1")
    try:
        # A Redis outage: the key expired, nobody declared the process dead.
        await client.delete(beat.key)
        await asyncio.to_thread(beat.beat)
        await asyncio.sleep(0.05)
        assert lost == [] and await client.exists(beat.key)
        # A peer declares it dead only while its key is missing: not now.
        assert await watch.declare(["fleet.worker.t!1"]) == set()
        # Cut off: the key expired and a peer declared it dead (tombstone).
        await client.delete(beat.key)
        watch.start()
        await until(lambda: reported)
        assert reported[0] == {"fleet.worker.t!1"}
        assert await client.exists(tombstone_key("fleet.worker.t!1", "t1"))
        await watch.stop()
        await asyncio.to_thread(beat.beat)
        await asyncio.sleep(0.05)
        assert lost == ["lost"]
        assert await client.exists(heartbeat_key("fleet.worker.t!1", "t1"))
        assert not await client.exists(tombstone_key("fleet.worker.t!1", "t1"))  # consumed
    finally:
        await watch.stop()
        await beat.stop()
        await client.aclose()


async def test_peer_watch__waits_after_its_own_redis_failures(redis_single: LocalRedis) -> None:
    client = aioredis.Redis.from_url(redis_single.urls[0])
    reported: list[set[str]] = []
    watch = PeerWatch(client, lambda: ["fleet.iface.gone!1"], reported.append, interval=0.05,
                      grace=0.5, prefix="fleet")
    watch.start()
    try:
        await asyncio.sleep(0.3)
        assert reported == []  # within the grace after start: peers get time to beat
        await asyncio.sleep(0.6)
        assert reported and reported[0] == {"fleet.iface.gone!1"}
    finally:
        await watch.stop()
        await client.aclose()


async def test_peer_watch__its_own_key_lapsed__the_peers_get_their_grace(
    redis_single: LocalRedis,
) -> None:
    # A failover longer than the TTL lapses every heartbeat key at once. A process that finds
    # its own key lapsed could not see Redis either: it must not declare a peer dead before
    # that peer had time to beat again (the fresh-clone failure of issue 32: every socket of
    # the fleet closed, or re-homed with its messages lost, after a heartbeat master's SIGKILL).
    url = redis_single.urls[0]
    client = aioredis.Redis.from_url(url)
    peer = "fleet.worker.t!peer"
    peer_key = heartbeat_key(peer, "t3")
    await client.set(peer_key, "{}", px=60_000)
    reported: list[set[str]] = []
    me = Heartbeat([url], "fleet.iface.t!me", interval=0.2, ttl=0.6, prefix="t3")
    await me.start()
    watch = PeerWatch(client, lambda: [peer], reported.append, interval=0.05, grace=1.0,
                      prefix="t3")
    watch.start()
    try:
        await asyncio.sleep(1.2)  # past the grace after start; the peer is alive
        await client.delete(me.key)
        await asyncio.to_thread(me.beat)  # finds its own key lapsed: re-registers
        await client.delete(peer_key)  # the peer's lapsed too; it beats again 0.5 s later
        await asyncio.sleep(0.5)
        assert reported == [], "a peer declared dead right after our own key lapsed"
        await client.set(peer_key, "{}", px=60_000)
        await asyncio.sleep(1.0)
        assert reported == []
        # Without a lapse of its own, a missing peer is declared after the interval.
        await client.delete(peer_key)
        await asyncio.sleep(0.5)
        assert reported and reported[0] == {peer}
    finally:
        await watch.stop()
        await me.stop()
        await client.aclose()


async def test_peer_watch__while_its_own_beat_is_late__judges_nobody(
    redis_single: LocalRedis,
) -> None:
    # A process whose heartbeat thread hangs on a master that went away (a drained node) can
    # still read the new master from the loop: the peers it finds missing may hang the same
    # way. It judges nobody until it beats again and the grace has passed.
    client = aioredis.Redis.from_url(redis_single.urls[0])
    peer = "fleet.worker.t!late"
    reported: list[set[str]] = []
    late = {"now": True}
    watch = PeerWatch(client, lambda: [peer], reported.append, interval=0.05, grace=0.5,
                      cut_off=lambda: late["now"], prefix="t4")
    watch.start()
    try:
        await asyncio.sleep(1.0)  # past the grace after start, the peer missing all along
        assert reported == [], "a peer declared dead while our own beat was late"
        late["now"] = False
        await asyncio.sleep(0.3)
        assert reported == [], "a peer declared dead before the grace after our beat was back"
        await asyncio.sleep(0.5)
        assert reported and reported[0] == {peer}
    finally:
        await watch.stop()
        await client.aclose()
