"""Resumable sessions end to end (docs/resume-protocol.md, issue 29): real interfaces with the
fleet's key, a real worker, the split test project's SessionConsumer, clients cutting their
connection without a close frame and resuming on the same interface or another one.

What each test asserts is what the app sees (its records in Redis, its ``stats``) and what
the client gets (the hello, every server frame's seq: RawSession fails on a gap or a
duplicate)."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.cluster import RedisCluster
from support.resume_session import ORIGIN, RawSession, fresh, plain, records, sender, settled
from support.split import start_resumable as start

from channels_fleet.dev.stack import FleetStack
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.resume import envelope
from channels_fleet.resume.client import FleetSocket

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_new_session__hello_first__the_app_sees_only_its_subprotocol__plain_unchanged(
        fleet: FleetStack, redis: RedisCluster) -> None:
    (iface, _), (worker,) = start(fleet)
    name, path = fresh()
    session = RawSession(path, app=("chat.v1", "chat.v0"))
    hello = await session.open(iface)
    assert (hello.resumed, hello.ack, hello.protocol) == (False, 0, "chat.v1")
    assert envelope.valid_token(hello.session) and len(hello.session) == 43
    await session.send("one")
    await session.send("two")
    assert await session.recv_n(2) == ["one", "two"]
    stats = await session.stats()
    # The fleet's names and the token never reach the app: not in its list, not in its header.
    assert stats["subprotocols"] == ["chat.v1", "chat.v0"]
    assert stats["protocol_header"] == "chat.v1, chat.v0"
    assert stats["received"] == ["one", "two"]
    assert session.last == 3  # one, two, the stats: numbered 1..3
    assert await records(redis, name, 1) == ["connect"]
    # Client frames the app took are acknowledged with an A when no D goes back: within
    # ACK_AFTER_S (1 s) of the first one unacknowledged.
    for n in range(20):
        await session.send(f"quiet:{n}")
    assert await session.acked(23, timeout=4.0) == 23  # one, two, stats, then 4..23

    # The Python client, on the same interface.
    py_name, py_path = fresh()
    async with FleetSocket(iface.url + py_path, subprotocols=["chat.v1"], origin=ORIGIN) as ws:
        assert (ws.resumable, ws.protocol, ws.sessions) == (True, "chat.v1", 1)
        assert ws.session is not None and ws.session != hello.session
        for n in range(5):
            await ws.send(f"py-{n}")
        assert [await ws.recv() for _ in range(5)] == [f"py-{n}" for n in range(5)]
    assert await records(redis, py_name, 2) == ["connect", "disconnect:1000"]

    # A plain client on the same interface: no envelope, no hello, its subprotocol as today.
    plain_name, plain_path = fresh()
    sock = await plain(iface, plain_path, "chat.v1")
    assert sock.subprotocol == "chat.v1"
    await sock.send("plain")
    assert await asyncio.wait_for(sock.recv(), 10) == "plain"
    await sock.send("stats")
    assert json.loads(await asyncio.wait_for(sock.recv(), 10))["received"] == ["plain"]
    await sock.close()
    assert await records(redis, plain_name, 2) == ["connect", "disconnect:1000"]
    # The resumable session is untouched by all that.
    await session.send("three")
    assert await session.recv() == "three"
    assert await records(redis, name, 2, timeout=0.5) == ["connect"]
    # Two sessions started here (the raw one, FleetSocket's); the plain socket is none.
    assert await settled(iface, "channels_fleet_sessions_started_total", 2) == 2
    assert await settled(worker, "channels_fleet_sessions_ended_total", 1, reason="client") == 1
    assert await settled(iface, "channels_fleet_sessions_resumed_total", 0) == 0


async def test_network_loss__resume_on_the_same_interface__no_disconnect_nothing_lost_or_twice(
        fleet: FleetStack, redis: RedisCluster) -> None:
    (iface, _), (worker,) = start(fleet)
    name, path = fresh()
    session = RawSession(path)
    await session.open(iface)
    token = session.token
    await session.send("later:1:4:away")  # the app sends away-0..3 a second from now
    await session.send("sync")
    assert await session.recv() == "sync"  # so the app has the later: before the cut
    for n in range(5):
        await session.send(f"quiet:{n}")  # not echoed: only the app's record shows them
    session.cut()
    await asyncio.sleep(2.0)  # detached while the app sends

    hello = await session.open(iface, resume=True)
    assert (hello.resumed, hello.session, hello.protocol) == (True, token, "chat.v1")
    assert 2 <= hello.ack <= 7, hello  # it held the later: and the sync, maybe quiet ones
    # The app's frames sent while detached: after the resume, in order, each once.
    assert await session.recv_n(4) == [f"away-{n}" for n in range(4)]
    assert session.last == 5
    stats = await session.stats()
    # The client's frames sent just before the cut reached the app exactly once.
    assert stats["received"] == ["later:1:4:away", "sync", *[f"quiet:{n}" for n in range(5)]]
    assert await records(redis, name, 2, timeout=1.0) == ["connect"]  # no disconnect, no connect
    assert await settled(iface, "channels_fleet_sessions_resumed_total", 1) == 1
    assert await settled(worker, "channels_fleet_session_frames_replayed_total", 4) == 4

    # A second loss and resume, then a clean close ends it.
    session.cut()
    await asyncio.sleep(0.5)
    hello = await session.open(iface, resume=True)
    assert (hello.resumed, hello.ack) == (True, 8)  # 7 frames and the stats
    await session.send("again")
    assert await session.recv() == "again"
    assert session.last == 7
    await session.close(1000)
    assert await records(redis, name, 2) == ["connect", "disconnect:1000"]
    assert await settled(iface, "channels_fleet_sessions_resumed_total", 2) == 2
    assert await settled(worker, "channels_fleet_session_frames_replayed_total", 4) == 4
    assert await settled(worker, "channels_fleet_sessions_ended_total", 1, reason="client") == 1
    assert await settled(worker, "channels_fleet_sessions_detached", 0) == 0


async def test_resume_on_the_other_interface__group_messages_while_detached_and_after__all_in_order(
        fleet: FleetStack, redis: RedisCluster,
        project_layer: RedisClusterChannelLayer) -> None:
    (home, other), (worker,) = start(fleet)
    name, path = fresh()
    to_group = sender(project_layer, f"session-{name}")

    session = RawSession(path)
    await session.open(home)
    await session.echo("hi")
    await to_group("g0")
    assert await session.recv() == "g0"
    session.cut()
    await asyncio.sleep(0.5)
    await to_group(*[f"g{n}" for n in range(1, 6)])  # to the home's LIST, while detached
    await asyncio.sleep(1.0)
    assert await settled(worker, "channels_fleet_sessions_detached", 1) == 1

    hello = await session.open(other, resume=True)
    assert (hello.resumed, hello.ack) == (True, 1)
    # Still through the home interface, which keeps the consumer's channel and forwards.
    await to_group(*[f"g{n}" for n in range(6, 11)])
    assert await session.recv_n(10) == [f"g{n}" for n in range(1, 11)]
    assert session.last == 12
    await session.send("echo")
    assert await session.recv() == "echo"
    stats = await session.stats()
    assert stats["received"] == ["hi", "echo"]
    assert await records(redis, name, 2, timeout=1.0) == ["connect"]
    # And back to the home interface.
    session.cut()
    await asyncio.sleep(0.5)
    hello = await session.open(home, resume=True)
    assert (hello.resumed, hello.ack) == (True, 3)
    await to_group("g11")
    assert await session.recv() == "g11"
    assert await records(redis, name, 2, timeout=0.5) == ["connect"]
    assert await settled(other, "channels_fleet_sessions_resumed_total", 1) == 1
    assert await settled(home, "channels_fleet_sessions_resumed_total", 1) == 1
    assert await settled(worker, "channels_fleet_session_frames_replayed_total", 5) == 5
    assert await settled(worker, "channels_fleet_sessions_detached", 0) == 0
