"""A worker's host with resumable sessions, over the loopback layer: it takes the session items
(DETACH, RESUME, CLIENT_ACK), detaches a dead interface's sessions instead of abandoning them,
and a drain ends its detached sessions (1001)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.loopback import LoopbackFleet

from channels_fleet.relay import wire
from channels_fleet.relay.session_items import (
    CLIENT_ACK,
    DETACH,
    RESUME,
    RESUMED,
    SESSION_END,
    session_mark,
)
from channels_fleet.worker.owned import ABANDONED, CLOSED, DETACHED, RUNNING

pytestmark = pytest.mark.timeout(20)

SID = "89abcdef0123456789abcdef01234567"
ORIGIN = b"https://app.example"


async def interface(fleet: LoopbackFleet) -> str:
    return await fleet.layer.new_channel(wire.INTERFACE_CHANNELS)


async def items(fleet: LoopbackFleet, iface: str, *, until: str) -> list[list[Any]]:
    """The items sent to ``iface`` up to the first of kind ``until``."""
    got: list[list[Any]] = []
    while not any(item[0] == until for item in got):
        message = await asyncio.wait_for(fleet.layer.receive(iface), 5)
        got.extend(wire.parse_batch(message))
    return got


async def connect(fleet: LoopbackFleet, iface: str, claim: str, *, session: bool) -> None:
    scope = {"type": "websocket", "path": "/ws/", "headers": [(b"origin", ORIGIN)],
             "subprotocols": [], "query_string": b"", "client": ["127.0.0.1", 1],
             "server": ["127.0.0.1", 2], "scheme": "ws"}
    envelope = wire.connect_envelope(iface, claim, scope, 5.0, ack=True,
                                     session=session_mark(SID) if session else None)
    await fleet.layer.send(wire.CONNECT_QUEUE, envelope)
    accept = await items(fleet, iface, until=wire.SEND)
    assert accept[0] == [wire.CLAIM, claim, fleet.hosts[-1].side.channel]


async def test_dead_interface__sessions_detach__plain_sockets_abandoned(
        fleet: LoopbackFleet) -> None:
    host = await fleet.add_host(resume_window=30)
    iface = await interface(fleet)
    await connect(fleet, iface, "s.1~1", session=True)
    await connect(fleet, iface, "p.1~1", session=False)
    session, plain = host.instances.running["s.1~1"], host.instances.running["p.1~1"]
    fleet.world.declare_dead(iface)
    assert session.state is DETACHED and plain.state is ABANDONED
    assert iface not in host.instances.ifaces()  # a detached session holds no socket there
    assert not session.gone


async def test_session_items_reach_the_host__drain_ends_detached_sessions_1001(
        fleet: LoopbackFleet) -> None:
    host = await fleet.add_host(resume_window=30)
    home, other = await interface(fleet), await interface(fleet)
    await connect(fleet, home, "s.1~1", session=True)
    instance = host.instances.running["s.1~1"]
    await fleet.layer.send(host.side.channel, wire.batch(
        [[RESUME, "s.1~2", [SID, 0, ORIGIN.decode()]]], sender=other))
    resumed = await items(fleet, other, until=RESUMED)
    assert resumed == [[wire.CLAIM, "s.1~2", host.side.channel],
                       [RESUMED, "s.1~2", [0, "", "", home, "s.1~1"]]]
    assert instance.state is RUNNING and instance.id == "s.1~2"
    await fleet.layer.send(host.side.channel, wire.batch(
        [[CLIENT_ACK, "s.1~2", 0], [DETACH, "s.1~2", 1006]], sender=other))
    await asyncio.sleep(0.1)
    assert instance.state is DETACHED
    fleet.hosts.remove(host)
    await host.drain(3.0)
    assert instance.state is CLOSED
    assert fleet.app.seen()[-1] == {"type": "websocket.disconnect", "code": 1001}
    ended = await items(fleet, home, until=SESSION_END)
    assert ended[-1] == [SESSION_END, "s.1~1", [1001, "drain"]]
