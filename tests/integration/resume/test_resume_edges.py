"""Where a resumable session ends or cannot be resumed (docs/resume-protocol.md §3, §4): the
window, two resumes of one token, a forged token, a clean close, an interface without the key.
Real processes, as test_resume_sessions.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import pytest
from redis.cluster import RedisCluster
from support.resume_session import ORIGIN, RawSession, fresh, plain, records, settled
from support.split import start_resumable as start

from channels_fleet.dev.stack import FleetStack
from channels_fleet.resume import envelope
from channels_fleet.resume.client import FleetSocket
from channels_fleet.resume.envelope import End

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_window_over__a_resume_gets_a_new_session__the_app_saw_1006(
        fleet: FleetStack, redis: RedisCluster) -> None:
    (home, other), (worker,) = start(fleet, window=2)
    name, path = fresh()
    session = RawSession(path)
    await session.open(home)
    old = session.token
    await session.send("before")
    assert await session.recv() == "before"
    session.cut()
    await asyncio.sleep(3.0)
    hello = await session.open(other, resume=True)
    assert (hello.resumed, hello.ack) == (False, 0)
    assert hello.session != old
    assert await records(redis, name, 3) == ["connect", "disconnect:1006", "connect"]
    assert await settled(worker, "channels_fleet_sessions_ended_total", 1, reason="window") == 1
    assert await settled(other, "channels_fleet_sessions_started_total", 1) == 1
    assert await settled(other, "channels_fleet_sessions_resumed_total", 0) == 0
    # The new session is a session like any other.
    await session.send("after")
    assert await session.recv() == "after"
    assert (await session.stats())["received"] == ["after"]


async def test_two_resumes_of_one_token__one_wins__the_other_is_closed_4001(
        fleet: FleetStack, redis: RedisCluster) -> None:
    (first, second), (worker,) = start(fleet)
    name, path = fresh()
    session = RawSession(path)
    await session.open(first)
    await session.send("one")
    assert await session.recv() == "one"
    session.cut()
    await asyncio.sleep(0.5)

    twin = session.fork()
    hellos = await asyncio.gather(session.open(first, resume=True),
                                  twin.open(second, resume=True))
    assert [(h.resumed, h.ack) for h in hellos] == [(True, 1), (True, 1)]
    ends = await asyncio.gather(session.closed(timeout=5), twin.closed(timeout=5),
                                return_exceptions=True)
    superseded = [end for end in ends if not isinstance(end, BaseException)]
    assert len(superseded) == 1, ends  # the winner stays open (its wait times out)
    code, seen = superseded[0]  # type: ignore[misc]
    assert code == envelope.CLOSE_SUPERSEDED
    assert not [m for m in seen if isinstance(m, End)]  # 4001 without X
    winner = twin if isinstance(ends[0], tuple) else session
    assert isinstance(ends[1 if winner is twin else 0], TimeoutError)
    await winner.send("two")
    assert await winner.recv() == "two"
    assert (await winner.stats())["received"] == ["one", "two"]
    assert await records(redis, name, 2, timeout=1.0) == ["connect"]
    for iface in (first, second):
        assert await settled(iface, "channels_fleet_sessions_resumed_total", 1) == 1
    assert await settled(worker, "channels_fleet_sessions_ended_total", 0) == 0


async def test_a_forged_token_gets_a_new_session__a_clean_close_ends_it(
        fleet: FleetStack, redis: RedisCluster) -> None:
    (iface, _), (worker,) = start(fleet)
    name, path = fresh()
    session = RawSession(path)
    forged = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    hello = await session.open(iface, token=forged)
    assert (hello.resumed, hello.ack) == (False, 0)  # never a refusal
    assert hello.session != forged
    real = session.token
    assert real is not None
    # A real token with one character changed (not the last: it holds padding bits).
    tampered = real[:5] + ("A" if real[5] != "A" else "B") + real[6:]
    other_name, other_path = fresh()
    other = RawSession(other_path)
    hello = await other.open(iface, token=tampered)
    assert hello.resumed is False and hello.session not in (tampered, real)
    await session.echo("hi")
    assert await records(redis, name, 2, timeout=0.5) == ["connect"]

    # A clean close ends the session: the app's disconnect, and a resume finds nothing.
    await session.close(1000)
    assert await records(redis, name, 2) == ["connect", "disconnect:1000"]
    hello = await session.open(iface, resume=True)
    assert (hello.resumed, hello.ack) == (False, 0)
    assert hello.session != real
    assert await records(redis, name, 3) == ["connect", "disconnect:1000", "connect"]
    assert await records(redis, other_name, 1) == ["connect"]
    assert await settled(iface, "channels_fleet_resume_refused_total", 2, reason="forged") == 2
    # ... and the ended session's token, refused as unknown or ended: 3 refusals in all.
    assert await settled(iface, "channels_fleet_resume_refused_total", 3) == 3
    assert await settled(worker, "channels_fleet_sessions_ended_total", 1, reason="client") == 1


async def test_without_the_key__an_offering_client_gets_a_plain_socket(
        fleet: FleetStack, redis: RedisCluster) -> None:
    (iface,), _ = start(fleet, interfaces=1, resume=False)
    name, path = fresh()
    async with FleetSocket(iface.url + path, subprotocols=["chat.v1"], origin=ORIGIN) as ws:
        assert (ws.resumable, ws.session, ws.protocol) == (False, None, "chat.v1")
        await ws.send("plain")
        assert await ws.recv() == "plain"
        await ws.send("stats")
        assert json.loads(await ws.recv())["received"] == ["plain"]
    assert await records(redis, name, 2) == ["connect", "disconnect:1000"]
    # A raw offer: the app's subprotocol is selected, the first message is the app's.
    raw_name, raw_path = fresh()
    sock = await plain(iface, raw_path, *envelope.offer(["chat.v1"]))
    assert sock.subprotocol == "chat.v1"
    await sock.send("hello")
    assert await asyncio.wait_for(sock.recv(), 10) == "hello"
    await sock.close()
    assert await records(redis, raw_name, 2) == ["connect", "disconnect:1000"]
