"""WorkerRoom on a real Redis (single and cluster): full only when every live worker's heartbeat
says it is at its cap or draining; interfaces, the dead and statuses without a cap never count,
and a worker whose heartbeat lapsed lately is unknown (it may have room), never full."""

from __future__ import annotations

import asyncio
import time

from channels_fleet.layers.clients import redis_client
from channels_fleet.relay import wire
from channels_fleet.relay.heartbeat import Heartbeat
from channels_fleet.relay.room import WorkerRoom, takes_none


def worker(hosts: list[str], name: str, prefix: str, status: dict[str, object]) -> Heartbeat:
    """A worker's heartbeat whose status is ``status`` (changed in place by the test)."""
    return Heartbeat(hosts, f"fleet.worker.t!{name}", interval=0.2, ttl=0.6, prefix=prefix,
                     status=lambda: status, registry=wire.workers_key(prefix))


async def test_full_only_when_every_live_worker_is_at_its_cap(redis_hosts: list[str]) -> None:
    prefix = f"room{time.time_ns()}"
    client = await redis_client(redis_hosts)
    room = WorkerRoom(client, prefix=prefix, interval=0.1, full_after=0.5, lapsed_unknown_for=1.5)
    one = {"sockets": 2, "concurrency": 2, "full_for": 3.0}
    two = {"sockets": 1, "concurrency": 2, "full_for": 0.0}
    w1, w2 = worker(redis_hosts, "w1", prefix, one), worker(redis_hosts, "w2", prefix, two)
    # An interface beats too, with no registry: it is no worker, never counted.
    iface = Heartbeat(redis_hosts, "fleet.iface.t!i1", interval=0.2, ttl=0.6, prefix=prefix,
                      status=lambda: {"sockets": 0})
    try:
        assert await room.read() is False  # no worker known: unknown is never full
        for hb in (w1, w2, iface):
            await hb.start()
        assert await room.read() is False and room.workers == 2  # w2 has a slot
        two.update(sockets=2, full_for=0.2)  # full for a moment: it may take one soon
        await asyncio.sleep(0.4)  # the next beat carries it
        assert await room.read() is False
        two.update(full_for=0.6)  # full for longer than full_after
        await asyncio.sleep(0.4)
        assert await room.read() is True
        two.update(sockets=0, full_for=0.0, draining=True)  # draining takes nothing
        await asyncio.sleep(0.4)
        assert await room.read() is True

        # w2 drains and w1's beats lapse (cut off from the heartbeats' shard while it fails
        # over): w2 alone is listed live, but w1 may have room: not full.
        one.update(sockets=0, full_for=0.0)
        await asyncio.sleep(0.4)
        await w1.stop(remove=False)
        await asyncio.sleep(0.8)
        assert await room.read() is False and room.workers == 1
        # w1 beats again (it registers afresh): known again.
        w1 = worker(redis_hosts, "w1", prefix, one)
        await w1.start()
        assert await room.read() is False and room.workers == 2
        one.update(sockets=2, full_for=3.0)
        await asyncio.sleep(0.4)
        assert await room.read() is True

        # w2 dies (its key expires, no word): unknown for lapsed_unknown_for, then gone, and
        # w1 alone is full.
        await w2.stop(remove=False)
        await asyncio.sleep(0.8)
        assert await room.read() is False and room.workers == 1
        await asyncio.sleep(1.5)
        assert await room.read() is True and room.workers == 1
        # w1 stops cleanly: it leaves the registry at once; nobody is known, so not full.
        await w1.stop()
        assert await room.read() is False and room.workers == 0

        # The loop keeps `full` current.
        w3 = worker(redis_hosts, "w3", prefix, {"sockets": 5, "concurrency": 5, "full_for": 9})
        await w3.start()
        reading = asyncio.create_task(room.keep_reading())
        await asyncio.sleep(0.3)
        assert room.full
        await w3.stop()
        await asyncio.sleep(0.3)
        assert not room.full
        reading.cancel()
    finally:
        for hb in (w1, iface):
            await hb.stop()
        await client.aclose()


def test_what_counts_as_taking_none() -> None:
    assert takes_none({"sockets": 3, "concurrency": 3, "full_for": 1.0}, 1.0)
    assert takes_none({"sockets": 0, "concurrency": 3, "draining": True}, 1.0)
    assert not takes_none({"sockets": 3, "concurrency": 3, "full_for": 0.4}, 1.0)
    assert not takes_none({"sockets": 2, "concurrency": 3, "full_for": 0}, 1.0)
    # An older worker's status, a bare timestamp, junk: unknown, so it may have room.
    assert not takes_none({"sockets": 3, "concurrency": 3}, 1.0)
    assert not takes_none(1700000000.0, 1.0)
    assert not takes_none({"full_for": True}, 1.0)
