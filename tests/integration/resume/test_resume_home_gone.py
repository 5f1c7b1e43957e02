"""A session whose HOME interface is gone (docs/design/resume-server.md §6.1): the consumer's
channel is homed in that interface's LIST, which nobody pops any more; the workers adopt it
(worker/adopter.py) and every group message still reaches the client, in order, once.

Real interfaces and a real worker of the split test project on the real Redis Cluster; the
home is SIGKILLed (a node lost) or SIGTERMed (a rollout: it drains and exits)."""

from __future__ import annotations

import asyncio
import signal

import pytest
from redis.cluster import RedisCluster
from support.resume_session import (
    RawSession,
    fresh,
    records,
    resumed_elsewhere,
    sender,
    settled,
)
from support.scrape import metric
from support.split import start_resumable as start

from channels_fleet.dev.stack import FleetStack
from channels_fleet.layers import RedisClusterChannelLayer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


async def test_home_killed__resumed_elsewhere__group_messages_after_the_kill_all_arrive_once(
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
    # The socket moves to the other interface; the channel stays homed on the first.
    session.cut()
    await asyncio.sleep(0.5)
    hello = await session.open(other, resume=True)
    assert (hello.resumed, hello.ack) == (True, 1)
    await to_group("g1")
    assert await session.recv() == "g1"  # forwarded by the live home

    home.signal(signal.SIGKILL)
    await asyncio.to_thread(home.popen.wait, 10)
    texts = [f"k{n}" for n in range(20)]
    await to_group(*texts[:10])  # before the worker finds the home dead: they wait in its LIST
    await asyncio.sleep(1.0)
    await to_group(*texts[10:])
    assert await session.recv_n(20, timeout=15) == texts  # RawSession fails on a gap or a dup
    # Nothing more: no duplicate waits behind them.
    await session.send("echo")
    assert await session.recv() == "echo"
    assert await records(redis, name, 1, timeout=0.5) == ["connect"]
    assert await settled(worker, "channels_fleet_adopted_messages_total", 20) == 20


async def test_home_killed_with_sockets_on_it__two_workers__each_session_gets_all_once(
        fleet: FleetStack, redis: RedisCluster,
        project_layer: RedisClusterChannelLayer) -> None:
    """Node loss: the home dies with the sockets; each worker detaches its sessions and records
    them; one adopts the LIST and forwards the other's (MESSAGE items, routed by alias)."""
    (home, other), workers = start(fleet, workers=2)
    sessions = []
    owned = [0.0, 0.0]
    while len(sessions) < 4 or (0.0 in owned and len(sessions) < 12):  # on both workers
        name, path = fresh()
        session = RawSession(path)
        await session.open(home)
        await session.echo("hi")
        sessions.append((session, sender(project_layer, f"session-{name}")))
        owned = [await asyncio.to_thread(metric, w, "channels_fleet_owned_connections")
                 for w in workers]
    assert 0.0 not in owned, owned

    home.signal(signal.SIGKILL)
    await asyncio.to_thread(home.popen.wait, 10)
    texts = [f"k{n}" for n in range(10)]
    for session, to_group in sessions:
        await to_group(*texts[:5])  # the sockets are gone: they wait in the dead home's LIST
        session.cut()
    await asyncio.sleep(1.0)
    for session, to_group in sessions:
        hello = await session.open(other, resume=True)
        assert (hello.resumed, hello.ack) == (True, 1), hello
        await to_group(*texts[5:])
    for session, _ in sessions:
        assert await session.recv_n(10, timeout=15) == texts
        await session.send("echo")
        assert await session.recv() == "echo"
    adopted = [await asyncio.to_thread(metric, w, "channels_fleet_adopted_messages_total")
               for w in workers]
    assert sum(adopted) == 10 * len(sessions), adopted


async def drained_home(fleet: FleetStack, project_layer: RedisClusterChannelLayer,
                       during: list[str]) -> tuple[RawSession, list[str]]:
    """A session on its home, sent "before"; the home drains (a rollout: SIGTERM, its sockets
    closed 1001, it exits); ``during`` sent between its close and the resume on the other
    interface; then "after" ones once the home has exited. The session and what it got."""
    (home, other), (worker,) = start(fleet)
    name, path = fresh()
    to_group = sender(project_layer, f"session-{name}")
    session = RawSession(path)
    await session.open(home)
    await session.echo("hi")
    await to_group("before")
    assert await session.recv() == "before"

    home.signal(signal.SIGTERM)
    code, seen = await session.closed(timeout=30)
    assert code == 1001 and not [m for m in seen if hasattr(m, "payload")], (code, seen)
    await to_group(*during)
    hello = await session.open(other, resume=True)
    assert (hello.resumed, hello.ack) == (True, 1), hello
    assert await asyncio.to_thread(home.popen.wait, 30) is not None
    after = [f"a{n}" for n in range(10)]
    await to_group(*after)
    got = []
    for _ in range(len(during) + len(after)):
        try:
            got.append(await session.recv(timeout=10))
        except TimeoutError:
            break
    return session, got


async def test_home_drains__resumed_elsewhere__messages_after_its_exit_all_arrive_once(
        fleet: FleetStack, project_layer: RedisClusterChannelLayer) -> None:
    session, got = await drained_home(fleet, project_layer, during=[])
    assert got == [f"a{n}" for n in range(10)]
    await session.send("echo")
    assert await session.recv() == "echo"


async def test_home_drains__messages_while_it_drains_wait_for_the_adopter(
        fleet: FleetStack, project_layer: RedisClusterChannelLayer) -> None:
    during = [f"d{n}" for n in range(5)]
    _, got = await drained_home(fleet, project_layer, during=during)
    assert got == [*during, *[f"a{n}" for n in range(10)]]


#: The steady group messages: one every INTERVAL, COUNT to each session, before, during and
#: well after the adopting worker's peer (the sessions' owner) is killed.
INTERVAL, COUNT = 0.05, 300
ADOPTED = "channels_fleet_adopted_messages_total"


async def test_home_gone__adopted__then_the_session_s_worker_killed__every_message_once(
        fleet: FleetStack, redis: RedisCluster,
        project_layer: RedisClusterChannelLayer) -> None:
    """The adopter forwards to the other worker's sessions; that worker is SIGKILLed: what it
    had not handled is replayed to the next owner, what comes meanwhile waits for it
    (worker/forwards.py)."""
    (home, other), workers = start(fleet, workers=2)
    sessions: list[tuple[RawSession, str, int]] = []
    while len({pid for _, _, pid in sessions}) < 2:  # sessions on both workers
        assert len(sessions) < 12
        name, path = fresh()
        session = await resumed_elsewhere(path, home, other, pause=0.3)
        sessions.append((session, name, (await session.stats())["worker"]))

    home.signal(signal.SIGKILL)
    await asyncio.to_thread(home.popen.wait, 10)
    texts = [f"m{n}" for n in range(COUNT)]
    killed: list[int] = []

    async def steady() -> None:
        for n, text in enumerate(texts):
            for _, name, _ in sessions:
                await project_layer.group_send(f"session-{name}",
                                               {"type": "session.message", "text": text})
            if not killed and n % 10 == 0:
                adopted = [await asyncio.to_thread(metric, w, ADOPTED) for w in workers]
                if any(adopted):  # one worker adopted the home: kill the other
                    (victim,) = [w for w, a in zip(workers, adopted, strict=True) if not a]
                    victim.signal(signal.SIGKILL)
                    killed.append(victim.popen.pid)
            await asyncio.sleep(INTERVAL)

    async def all_of(session: RawSession) -> list[str]:
        got: list[str] = []
        try:
            while len(got) < COUNT:
                got.append(await session.recv(timeout=30))  # fails on a gap or a duplicate
        except (AssertionError, TimeoutError) as exc:
            missing = [t for t in texts if t not in got]
            raise AssertionError(f"after {got[-3:]} ({len(got)} of {COUNT}): "
                                 f"{missing[:20]} missing") from exc
        return got

    *received, _ = await asyncio.gather(*(all_of(s) for s, _, _ in sessions), steady())
    assert killed and any(pid == killed[0] for _, _, pid in sessions)
    assert received == [texts] * len(sessions)
    for session, name, pid in sessions:
        await session.send("echo")
        assert await session.recv() == "echo"
        if pid == killed[0]:  # the next worker's instance started from connect: a restart
            connects = [r for r in await records(redis, name, 2) if r == "connect"]
            assert len(connects) == 2
