"""Claims, on a loopback fleet: from the connect envelope to the claim, and the refusal rule."""

from __future__ import annotations

import asyncio
import time

import pytest
from support.loopback import EchoApp, LoopbackFleet

from channels_fleet.exceptions import IllegalTransition
from channels_fleet.interface.client import AWAITING_CLAIM, OWNED, REHOMING, ClientConn
from channels_fleet.relay import wire

pytestmark = pytest.mark.timeout(20)

CLAIM_TIMEOUT = 0.3  # the fleet fixture's (tests/unit/conftest.py)


async def test_events_sent_before_the_claim__delivered_in_order_after_it(fleet) -> None:
    client = fleet.client()
    connecting = asyncio.ensure_future(client.connect())
    await asyncio.sleep(0.05)
    for text in ("a", "b", "c"):
        client.send_text(text)  # held: nobody has claimed the connection yet
    host = await fleet.add_host()
    assert (await connecting)["type"] == "websocket.accept"
    assert await client.texts(3) == [f"{host.side.channel}:{t}" for t in "abc"]
    conn = next(iter(fleet.gateway.conns.values()))
    assert (conn.state, conn.owner) == (OWNED, host.side.channel)
    await client.close()


async def test_no_worker_in_time__websocket_closed_1013_at_the_deadline(fleet) -> None:
    client = fleet.client()
    started = time.monotonic()
    assert (await client.connect())["type"] == "websocket.accept"  # so the code is seen
    assert await client.next() == {"type": "websocket.close", "code": 1013}
    assert time.monotonic() - started >= CLAIM_TIMEOUT * 0.9
    await client.close()


async def test_no_worker_in_time__http_503(fleet) -> None:
    client = fleet.client("/page/", http=True)
    client.request()
    start = await client.next()
    assert (start["type"], start["status"]) == ("http.response.start", 503)
    assert (await client.next())["body"].startswith(b"Service Unavailable")


async def test_full_work_queue__a_new_connection_is_refused_1013_at_once() -> None:
    fleet = await LoopbackFleet(EchoApp(), claim_timeout=5, connect_capacity=1).start()
    try:
        first = fleet.client()
        waiting = asyncio.ensure_future(first.connect())
        await asyncio.sleep(0.05)  # its envelope fills the one-slot queue
        second = fleet.client()
        started = time.monotonic()
        assert (await second.connect())["type"] == "websocket.accept"
        assert await second.next() == {"type": "websocket.close", "code": 1013}
        assert time.monotonic() - started < 1  # at once, not at the deadline
        waiting.cancel()
    finally:
        await fleet.stop()


async def test_full_work_queue__a_rehomed_socket_is_closed_1012() -> None:
    fleet = await LoopbackFleet(EchoApp(), claim_timeout=5, connect_capacity=1,
                                worker={"concurrency": 1}).start()
    try:
        host = await fleet.add_host()
        owned = fleet.client()
        assert (await owned.connect())["type"] == "websocket.accept"
        queued = fleet.client()  # the full worker does not take it: the queue is full now
        waiting = asyncio.ensure_future(queued.connect())
        await asyncio.sleep(0.05)
        await fleet.kill(host)  # its socket is re-homed, and the queue has no room
        assert await owned.next() == {"type": "websocket.close", "code": 1012}
        waiting.cancel()
    finally:
        await fleet.stop()


async def test_unclaimed_after_a_worker_died__sent_once_more_and_claimed(fleet) -> None:
    first = await fleet.add_host(concurrency=1)
    owned = fleet.client()
    assert (await owned.connect())["type"] == "websocket.accept"
    taken = fleet.client()
    connecting = asyncio.ensure_future(taken.connect())
    # A worker takes the envelope and dies before claiming it: here, the test takes it.
    envelope = await asyncio.wait_for(fleet.layer.receive(wire.CONNECT_QUEUE), 2)
    conn = fleet.gateway.conns.current(envelope["conn"])
    assert conn is not None
    await fleet.kill(first)  # a worker the gateway watches died after the envelope went out
    second = await fleet.add_host()
    assert (await connecting)["type"] == "websocket.accept"  # the second copy was claimed
    taken.send_text("hi")
    assert await taken.texts(1) == [f"{second.side.channel}:hi"]
    # The second copy is a claim of its own: the first one's, were it claimed late, is not it.
    assert conn.resent and conn.claims == 2
    assert fleet.gateway.conns.current(envelope["conn"]) is None
    await taken.close()
    await owned.close()


async def test_a_claim_for_a_connection_already_gone__its_app_gets_the_disconnect(fleet) -> None:
    client = fleet.client()
    connecting = asyncio.ensure_future(client.connect())
    await asyncio.sleep(0.05)
    await client.close(1001)  # gone before any worker took its envelope
    connecting.cancel()
    await fleet.add_host()
    for _ in range(50):
        if fleet.app.instances and fleet.app.seen()[-1]["type"] == "websocket.disconnect":
            break
        await asyncio.sleep(0.02)
    assert [e["type"] for e in fleet.app.seen()] == ["websocket.connect", "websocket.disconnect"]
    assert fleet.app.seen()[-1]["code"] == 1006


def test_client_states__a_move_the_diagram_lacks_raises() -> None:
    conn = ClientConn("i.1", True, None, {})
    with pytest.raises(IllegalTransition, match="new -> owned"):
        conn.claimed_by("fleet.worker.a!x")
    assert conn.await_claim() == conn.claim_id and conn.state is AWAITING_CLAIM
    conn.claimed_by("fleet.worker.a!x")
    assert conn.state is OWNED and not conn.app_accepted()  # not re-homing: nothing ends
    assert conn.hand_over() == "fleet.worker.a!x" and conn.owner is None
    conn.await_claim()
    conn.claimed_by("fleet.worker.b!y")
    assert conn.state is REHOMING and conn.app_accepted() and conn.state is OWNED
    assert conn.finish() and not conn.finish()  # finished once
    with pytest.raises(IllegalTransition):
        conn.await_claim()
