"""Hand-back on a loopback fleet: a draining worker gives its sockets back, losing no event."""

from __future__ import annotations

import asyncio

import pytest
from support.loopback import EchoApp, LoopbackFleet

from channels_fleet.exceptions import IllegalTransition
from channels_fleet.relay import wire
from channels_fleet.worker.owned import CLOSED, HANDING_BACK, RUNNING, OwnedConn

pytestmark = pytest.mark.timeout(20)



async def test_stash_returned_on_fence_goes_to_the_new_owner_first(fleet) -> None:
    old = await fleet.add_host()
    client = fleet.client("/slow/")
    assert (await client.connect())["type"] == "websocket.accept"
    client.send_text("a")  # the app is busy with it (0.2 s) when the drain begins
    await asyncio.sleep(0.05)
    drain = asyncio.ensure_future(old.drain(5))
    await asyncio.sleep(0.05)
    client.send_text("b")  # arrives during the hand-back: stashed, returned, replayed
    new = await fleet.add_host()
    assert await client.texts(2) == [f"{old.side.channel}:a", f"{new.side.channel}:b"]
    await drain
    await client.close()


async def test_a_fence_never_answered__the_wait_ends_at_the_claim_deadline(fleet) -> None:
    old = await fleet.add_host()
    client = fleet.client()
    assert (await client.connect())["type"] == "websocket.accept"

    async def ignore(conn_id: str, payload: None, sender: str) -> None:
        return None  # a worker that never returns what it held

    old.side.handle({wire.FENCE: ignore})
    new = await fleet.add_host()
    drain = asyncio.ensure_future(old.drain(5))
    await asyncio.sleep(0.1)
    client.send_text("after")  # held until the RETURN that never comes, then delivered
    assert await client.texts(1, timeout=5) == [f"{new.side.channel}:after"]
    await drain
    await client.close()


async def test_old_and_new_owner_dying_together__held_events_wait_for_the_next(fleet) -> None:
    old = await fleet.add_host()
    client = fleet.client()
    assert (await client.connect())["type"] == "websocket.accept"

    async def ignore(conn_id: str, payload: None, sender: str) -> None:
        return None  # the RETURN never comes: the socket stays fenced by the old owner

    old.side.handle({wire.FENCE: ignore})
    new = await fleet.add_host()
    drain = asyncio.ensure_future(old.drain(5))
    for _ in range(50):
        conn = next(iter(fleet.gateway.conns.values()))
        if conn.owner == new.side.channel:
            break  # claimed by the new owner, still fenced
        await asyncio.sleep(0.01)
    client.send_text("held")
    await asyncio.sleep(0.05)
    await fleet.kill(old, new)  # both found dead in one check
    drain.cancel()
    last = await fleet.add_host()
    assert await client.texts(1) == [f"{last.side.channel}:held"]
    await client.close()


async def test_stash_is_bounded_by_the_inbound_limit() -> None:
    fleet = await LoopbackFleet(EchoApp(), worker={"inbound_limit": 2}).start()
    try:
        host = await fleet.add_host()
        client = fleet.client()
        assert (await client.connect())["type"] == "websocket.accept"
        conn = next(iter(host.instances.running.values()))
        host.instances.handed[conn.id] = conn  # handed back: what arrives is stashed
        for n in range(5):
            await host.instances.on_event(conn.id, {"type": "websocket.receive", "text": str(n)},
                                          "")
        assert [e["text"] for e in conn.stash] == ["0", "1"]
    finally:
        await fleet.stop()


def test_owned_states__a_move_the_diagram_lacks_raises() -> None:
    conn = OwnedConn("i.1", "fleet.iface.x!y", True, 10, reap_after=1.0)
    assert conn.state is RUNNING
    with pytest.raises(IllegalTransition, match="running -> handed"):
        conn.hand_back()
    conn.close()
    assert conn.state is CLOSED
    with pytest.raises(IllegalTransition, match="closed -> handing back"):
        conn.begin_hand_back()
    assert conn.state is not HANDING_BACK
