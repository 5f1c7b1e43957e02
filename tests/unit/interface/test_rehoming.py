"""Re-homing on a loopback fleet: a WebSocket whose worker dies or drains moves to a live one."""

from __future__ import annotations

import asyncio
import time

import pytest
from support.loopback import EchoApp, LoopbackFleet

from channels_fleet.interface.client import OWNED
from channels_fleet.worker import handback

pytestmark = pytest.mark.timeout(20)

CLAIM_TIMEOUT = 0.3  # the fleet fixture's (tests/unit/conftest.py)


async def connected(fleet, path: str = "/ws/", **kwargs):
    client = fleet.client(path, **kwargs)
    assert (await client.connect())["type"] == "websocket.accept"
    return client


async def test_dead_worker__socket_rehomed_with_the_events_held_meanwhile(fleet) -> None:
    first = await fleet.add_host()
    client = await connected(fleet)
    client.send_text("before")
    assert await client.texts(1) == [f"{first.side.channel}:before"]
    await fleet.kill(first)
    client.send_text("during")  # held: the socket has no owner now
    second = await fleet.add_host()
    assert await client.texts(1) == [f"{second.side.channel}:during"]  # no second accept
    scope, seen = fleet.app.instances[-1]
    assert scope["fleet"]["rehomed"] == 1
    assert [e["type"] for e in seen] == ["websocket.connect", "websocket.receive"]
    conn = next(iter(fleet.gateway.conns.values()))
    assert (conn.state, conn.rehomed) == (OWNED, 1)
    await client.close()


async def test_rehomed_app_refusing__socket_closed_1008(fleet) -> None:
    first = await fleet.add_host()
    client = await connected(fleet, "/refuse-rehomed/")
    await fleet.kill(first)
    await fleet.add_host()
    assert await client.next() == {"type": "websocket.close", "code": 1008}


async def test_rehomed_app_not_accepting__socket_closed_1012_at_the_accept_timeout() -> None:
    fleet = await LoopbackFleet(EchoApp(), claim_timeout=CLAIM_TIMEOUT, accept_timeout=0.5).start()
    try:
        first = await fleet.add_host()
        stalled = await connected(fleet, "/stall-rehomed/")
        served = await connected(fleet)
        await fleet.kill(first)
        second = await fleet.add_host()
        started = time.monotonic()
        # Stuck in its connect (a database away...): the client is told to reconnect.
        assert await stalled.next() == {"type": "websocket.close", "code": 1012}
        assert time.monotonic() - started >= 0.5 * 0.9
        seen = next(seen for scope, seen in fleet.app.instances
                    if scope["path"] == "/stall-rehomed/" and scope["fleet"]["rehomed"])
        for _ in range(50):  # its app is told
            if seen[-1]["type"] == "websocket.disconnect":
                break
            await asyncio.sleep(0.02)
        assert [e["type"] for e in seen] == ["websocket.connect", "websocket.disconnect"]
        # One whose new app accepted is served past the accept timeout.
        await asyncio.sleep(0.6)
        served.send_text("after")
        assert await served.texts(1) == [f"{second.side.channel}:after"]
        await served.close()
    finally:
        await fleet.stop()


async def test_no_live_worker__rehomed_socket_closed_1012_after_twice_the_deadline(fleet) -> None:
    only = await fleet.add_host()
    client = await connected(fleet)
    await fleet.kill(only)
    started = time.monotonic()
    assert await client.next() == {"type": "websocket.close", "code": 1012}
    assert time.monotonic() - started >= 2 * CLAIM_TIMEOUT * 0.9


async def test_graphql_session__closed_1012_not_rehomed(fleet) -> None:
    first = await fleet.add_host()
    client = await connected(fleet, subprotocols=["graphql-transport-ws"])
    await fleet.add_host()
    await fleet.kill(first)
    assert await client.next() == {"type": "websocket.close", "code": 1012}


async def test_drain__every_frame_echoed_once_in_order_across_the_hand_back(fleet) -> None:
    first = await fleet.add_host()
    second = await fleet.add_host()
    clients = [await connected(fleet, "/slow/") for _ in range(3)]
    owners = {c.owner for c in fleet.gateway.conns.values()}
    draining = first if first.side.channel in owners else second
    for client in clients:
        client.send_text("0")
    drain = asyncio.ensure_future(draining.drain(5))
    for n in range(1, 6):  # while the hand-back happens: stashed, returned, replayed
        await asyncio.sleep(0.05)
        for client in clients:
            client.send_text(str(n))
    for client in clients:
        texts = await client.texts(6)
        assert [t.rsplit(":", 1)[1] for t in texts] == [str(n) for n in range(6)]
    await drain
    assert all(c.state is OWNED and c.owner != draining.side.channel
               for c in fleet.gateway.conns.values() if c.rehomed)
    for client in clients:
        await client.close()


async def test_drain__a_frame_the_app_had_not_finished_is_replayed_to_the_new_owner(
    fleet, monkeypatch
) -> None:
    # The app is still handling a frame when the hand-back's wait runs out (a handler slowed
    # by a Redis failover on the same node): the old instance's output is dropped, so the
    # frame goes to the new owner again, marked, rather than being lost silently.
    monkeypatch.setattr(handback, "HAND_BACK_WAIT", 0.2)
    first = await fleet.add_host()
    client = await connected(fleet, "/busy/")
    conn = next(iter(fleet.gateway.conns.values()))
    client.send_text("unfinished")
    await wait_for(lambda: conn.unacked.taken == 1)  # taken, 1 s to go
    second = await fleet.add_host()
    await first.drain(5)
    assert await client.texts(1) == [f"{second.side.channel}:unfinished"]
    replayed = [e for e in fleet.app.seen() if e["type"] == "websocket.receive"]
    assert replayed == [{"type": "websocket.receive", "text": "unfinished",
                         "fleet_replayed": True}]
    client.send_text("next")
    assert await client.texts(1) == [f"{second.side.channel}:next"]  # no second echo before
    await client.close()


async def wait_for(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def one_worker_one_socket(fleet):
    """One worker and one socket on it, whose frame so far its owner has acknowledged."""
    host = await fleet.add_host()
    client = await connected(fleet)
    client.send_text("before")
    assert await client.texts(1) == [f"{host.side.channel}:before"]
    conn = next(iter(fleet.gateway.conns.values()))
    await wait_for(lambda: len(conn.unacked) == 0)  # "before" is not to be replayed
    return host, client, conn


async def test_interface_declared_dead__rehomed_to_its_only_worker_with_frames_sent_meanwhile(
    fleet,
) -> None:
    # A stall past the heartbeat's TTL: the worker declared the gateway dead and dropped its
    # connection; awake, the gateway still holds the socket and re-homes it, to the same worker.
    host, client, conn = await one_worker_one_socket(fleet)
    fleet.world.declare_dead(fleet.gateway.side.channel)
    client.send_text("meanwhile")  # went to the worker that dropped it: replayed
    fleet.gateway.side.liveness.come_back()
    assert await client.texts(1) == [f"{host.side.channel}:meanwhile"]
    assert (conn.state, conn.rehomed, conn.owner) == (OWNED, 1, host.side.channel)
    assert fleet.app.instances[-1][0]["fleet"]["rehomed"] == 1
    await client.close()


async def test_interface_declared_dead__a_frame_acknowledged_while_it_stalled_is_not_replayed(
    fleet,
) -> None:
    # The owner's ACK of a frame waits in the gateway's channel while the gateway stalls.
    # Awake, the gateway takes what waits there before it re-homes: the frame is not handled
    # (and echoed) twice. (Seen on a fresh clone: a SIGSTOP right after an echo.)
    host = await fleet.add_host()
    client = await connected(fleet)
    conn = next(iter(fleet.gateway.conns.values()))
    fleet.layer.hold(fleet.gateway.side.channel)  # the stall: its channel is not read
    client.send_text("once")
    await asyncio.sleep(host.acks.delay * 2)  # echoed and acknowledged, both waiting
    fleet.world.declare_dead(fleet.gateway.side.channel)
    fleet.gateway.side.liveness.come_back()
    await fleet.layer.release(fleet.gateway.side.channel)
    assert await client.texts(1) == [f"{host.side.channel}:once"]
    await wait_for(lambda: conn.state is OWNED and conn.claims == 2)
    client.send_text("after")
    assert await client.texts(1) == [f"{host.side.channel}:after"]
    assert [e.get("text") for e in fleet.app.seen()] == [None, "after"]  # connect, no replay
    await client.close()


async def test_interface_declared_dead__the_old_app_instances_late_end_does_not_close_the_socket(
    fleet,
) -> None:
    # The race that took the first version of this re-home back: the worker had not declared
    # the gateway dead (another peer had), so its old app instance still ran. The GONE the
    # gateway sent it arrives after the same worker claimed the socket again; the old
    # instance's END then comes from the socket's owner, about the same connection. Only the
    # claim number tells it from the new instance's.
    host, client, conn = await one_worker_one_socket(fleet)
    fleet.layer.hold(host.side.channel)  # the GONE for the old instance is slow
    fleet.gateway.side.liveness.come_back()
    await wait_for(lambda: conn.state is OWNED and conn.claims == 2)  # claimed, accepted anew
    await fleet.layer.release(host.side.channel)
    await wait_for(lambda: fleet.app.seen(0)[-1]["type"] == "websocket.disconnect")
    client.send_text("after")
    assert await client.texts(1) == [f"{host.side.channel}:after"]  # open, not closed 1011
    assert [e["type"] for e in fleet.app.seen(1)] == ["websocket.connect", "websocket.receive"]
    assert client.sent.empty() and conn.state is OWNED
    await client.close()


async def test_worker_declared_dead_by_another_peer__tells_the_gateway_which_rehomes(
    fleet,
) -> None:
    # The gateway never judged the worker (in its grace after a {hb} failover, say) and never
    # will: the worker beats again. Back, the worker finds it was declared dead and drops its
    # connections; it says so (REHOME "dead"), and the socket moves as from a dead owner, here
    # to the same worker as a new claim, its unacknowledged frame replayed. Unsaid, the socket
    # stayed open with no app behind it (seen in make e2e-k8s's node loss).
    host, client, conn = await one_worker_one_socket(fleet)
    fleet.layer.hold(host.side.channel)  # "during" waits unread: not acknowledged
    client.send_text("during")
    await asyncio.sleep(0.05)
    host.side.liveness.come_back()
    await fleet.layer.release(host.side.channel)
    assert await client.texts(1) == [f"{host.side.channel}:during"]
    await wait_for(lambda: conn.state is OWNED and conn.claims == 2)
    assert fleet.app.instances[-1][0]["fleet"]["rehomed"] == 1
    client.send_text("after")
    assert await client.texts(1) == [f"{host.side.channel}:after"]
    await client.close()
