"""A session resumed AWAY from its home interface, then re-homed: its worker is SIGKILLed or
drains (SIGTERM). The consumer's channel stays homed on the home (the re-home envelope names it,
and the home); the next worker homes the same channel and claims the home's DETACHED connection,
which held the channel's messages meanwhile: every group message reaches the client, in order,
once (docs/architecture.md, Resumable sessions).

Real interfaces and two real workers of the split test project on the real Redis Cluster."""

from __future__ import annotations

import asyncio
import signal

import pytest
from redis.cluster import RedisCluster
from support.resume_session import RawSession, fresh, records, resumed_elsewhere
from support.split import start_resumable as start

from channels_fleet.dev.stack import FleetStack, ServiceProcess
from channels_fleet.layers import RedisClusterChannelLayer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

#: Group messages are sent every INTERVAL seconds, COUNT of them: before, during and well
#: after the owner's death is found (heartbeat TTL) and the socket re-homed.
INTERVAL, COUNT, KILL_AFTER = 0.05, 140, 10


async def resumed_away(fleet: FleetStack, project_layer: RedisClusterChannelLayer
                       ) -> tuple[RawSession, str, ServiceProcess, asyncio.Queue[str]]:
    """A session begun on one interface, resumed on the other: (the session, its name, the
    worker that runs it, a queue to send group messages through)."""
    (home, other), workers = start(fleet, workers=2)
    name, path = fresh()
    session = await resumed_elsewhere(path, home, other)
    await project_layer.group_send(f"session-{name}", {"type": "session.message", "text": "g"})
    assert await session.recv() == "g"  # forwarded by the home
    pid = (await session.stats())["worker"]
    (owner,) = [w for w in workers if w.popen.pid == pid]
    return session, name, owner, asyncio.Queue()


async def steady(project_layer: RedisClusterChannelLayer, name: str,
                 stop_owner: asyncio.Future[None], owner: ServiceProcess,
                 sig: signal.Signals) -> list[str]:
    """Send COUNT group messages every INTERVAL; signal the owner after KILL_AFTER of them."""
    texts = [f"m{n}" for n in range(COUNT)]
    for n, text in enumerate(texts):
        if n == KILL_AFTER:
            owner.signal(sig)
            stop_owner.set_result(None)
        await project_layer.group_send(f"session-{name}",
                                       {"type": "session.message", "text": text})
        await asyncio.sleep(INTERVAL)
    return texts


async def all_arrive(fleet: FleetStack, redis: RedisCluster,
                     project_layer: RedisClusterChannelLayer, sig: signal.Signals) -> None:
    session, name, owner, _ = await resumed_away(fleet, project_layer)
    signalled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sending = asyncio.create_task(steady(project_layer, name, signalled, owner, sig))
    got: list[str] = []
    try:
        while len(got) < COUNT:
            got.append(await session.recv(timeout=20))  # fails on a gap or a duplicate
    except (AssertionError, TimeoutError) as exc:
        raise AssertionError(f"after {got[-3:]} ({len(got)} of {COUNT})") from exc
    finally:
        texts = await sending
    assert got == texts
    # The next worker's instance started from connect (a restart, not a loss): two connects.
    connects = [r for r in await records(redis, name, 2) if r == "connect"]
    assert len(connects) == 2
    await session.send("echo")
    assert await session.recv() == "echo"


async def test_worker_killed__resumed_away_from_home__every_group_message_once_in_order(
        fleet: FleetStack, redis: RedisCluster,
        project_layer: RedisClusterChannelLayer) -> None:
    await all_arrive(fleet, redis, project_layer, signal.SIGKILL)


async def test_worker_drains__resumed_away_from_home__every_group_message_once_in_order(
        fleet: FleetStack, redis: RedisCluster,
        project_layer: RedisClusterChannelLayer) -> None:
    await all_arrive(fleet, redis, project_layer, signal.SIGTERM)
