"""fleet_status() on a real Redis (single and cluster): every live heartbeat's status, none of
the dead, and the work queue."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis

from channels_fleet import fleet_status
from channels_fleet.fleet import FleetStatus
from channels_fleet.layers.clients import redis_client
from channels_fleet.relay import wire
from channels_fleet.relay.heartbeat import Heartbeat
from channels_fleet.relay.peer_watch import PeerWatch
from channels_fleet.settings import SettingsError


def beat(hosts: list[str], channel: str, prefix: str, **status: object) -> Heartbeat:
    return Heartbeat(hosts, channel, interval=0.2, ttl=0.6, prefix=prefix,
                     status=lambda: {"name": channel.split("!")[1], **status})


async def test_every_live_process_with_its_status__the_dead_and_tombstones_left_out(
        redis_hosts: list[str]) -> None:
    prefix = f"st{time.time_ns()}"
    iface = beat(redis_hosts, "fleet.iface.a!i1", prefix, kind="interface", sockets=3)
    worker = beat(redis_hosts, "fleet.worker.b!w1", prefix, kind="worker", sockets=2,
                  closes={"1001": 4})
    gone = beat(redis_hosts, "fleet.worker.c!w2", prefix, kind="worker", sockets=0)
    other_fleet = beat(redis_hosts, "fleet.worker.d!x", prefix + "x", kind="worker")
    for hb in (iface, worker, gone, other_fleet):
        await hb.start()
    client = await redis_client(redis_hosts)
    reader = FleetStatus(redis_hosts, prefix=prefix)
    try:
        fleet = await asyncio.to_thread(reader.read)
        assert [(p["name"], p["kind"], p["sockets"]) for p in fleet["processes"]] == [
            ("i1", "interface", 3), ("w1", "worker", 2), ("w2", "worker", 0)]
        w1 = fleet["processes"][1]
        assert w1["channel"] == "fleet.worker.b!w1" and w1["closes"] == {"1001": 4}
        assert 0 <= w1["age"] < 1
        assert fleet["queue"] == {"name": "fleet.connect", "depth": 0, "oldest_age": 0.0}

        # w2 dies: its key expires and a peer leaves a tombstone; neither is listed.
        await gone.stop(remove=False)
        declared: list[set[str]] = []
        watch = PeerWatch(client, lambda: ["fleet.worker.c!w2"], declared.append,
                          interval=0.05, grace=0.0, prefix=prefix)
        await asyncio.sleep(0.8)
        watch.start()
        await asyncio.sleep(0.2)
        await watch.stop()
        assert declared and declared[0] == {"fleet.worker.c!w2"}
        names = [p["name"] for p in (await asyncio.to_thread(reader.read))["processes"]]
        assert names == ["i1", "w1"]

        # The statuses stay fresh: each beat rewrites them.
        await asyncio.sleep(0.5)
        assert all(p["age"] < 0.5 for p in (await asyncio.to_thread(reader.read))["processes"])
        # The one-shot helper reads the same.
        assert len((await asyncio.to_thread(fleet_status, redis_hosts, prefix=prefix))
                   ["processes"]) == 2
    finally:
        reader.close()
        for hb in (iface, worker, other_fleet):
            await hb.stop()
        await client.aclose()


async def test_work_queue_depth_and_oldest_age(redis_hosts: list[str]) -> None:
    prefix = f"q{time.time_ns()}"
    key = wire.queue_key(prefix)
    client = await redis_client(redis_hosts)
    # The layer's element format: "<expires_at_ms>|<payload>", sent with a 60 s expiry.
    sent = time.time() - 2.0
    await client.rpush(key, f"{int((sent + 60) * 1000)}|x".encode(), b"9999999999999|y")
    try:
        queue = (await asyncio.to_thread(fleet_status, redis_hosts, prefix=prefix))["queue"]
        assert queue["depth"] == 2 and 1.9 < queue["oldest_age"] < 5
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_bare_timestamp_heartbeat_is_named_after_its_channel(
        redis_single: object) -> None:
    url = redis_single.urls[0]  # type: ignore[attr-defined]
    prefix = f"old{time.time_ns()}"
    plain = redis.Redis.from_url(url)
    plain.set(wire.heartbeat_key("fleet.worker.o!1", prefix), time.time(), px=5000)
    plain.set(wire.heartbeat_key("fleet.iface.o!2", prefix), json.dumps(["junk"]), px=5000)
    try:
        procs = (await asyncio.to_thread(fleet_status, [url], prefix=prefix))["processes"]
        assert [(p["name"], p["kind"], p["age"] is not None) for p in procs] == [
            ("fleet.iface.o!2", "interface", False), ("fleet.worker.o!1", "worker", True)]
    finally:
        plain.close()


def test_no_redis_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHANNELS_FLEET_REDIS_URL", raising=False)
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_REDIS_URL is not set"):
        fleet_status()
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_KEY_PREFIX"):
        FleetStatus("redis://127.0.0.1:1", prefix="a{b}")
