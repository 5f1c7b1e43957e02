"""Replay on a loopback fleet: a dead owner's unacknowledged frames go to the next one, or the
socket is told (1012); acknowledgements ride on the batches, or come alone for a quiet socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from support.loopback import EchoApp, LoopbackFleet

from channels_fleet.interface.client import OWNED
from channels_fleet.interface.replay import REPLAYED
from channels_fleet.relay import wire

pytestmark = pytest.mark.timeout(20)


def counted(name: str, cause: str) -> float:
    return REGISTRY.get_sample_value(f"channels_fleet_{name}_total", {"cause": cause}) or 0.0


async def connected(fleet: LoopbackFleet, path: str = "/ws/") -> Any:
    client = fleet.client(path)
    assert (await client.connect())["type"] == "websocket.accept"
    return client


async def until(check: Any, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "not within the timeout"
        await asyncio.sleep(0.01)


def the_conn(fleet: LoopbackFleet) -> Any:
    (conn,) = fleet.gateway.conns.values()
    return conn


async def silenced(fleet: LoopbackFleet, host: Any, client: Any, *texts: str) -> None:
    """The host stops reading (as a process about to die): these frames reach it unread."""
    await host.side.relay.stop()
    unacked = the_conn(fleet).unacked
    relayed = unacked.first + len(unacked)
    for text in texts:
        client.send_text(text)
    await until(lambda: unacked.first + len(unacked) == relayed + len(texts))


async def test_dead_owner__unacknowledged_frames_replayed_marked_before_new_ones(fleet) -> None:
    first = await fleet.add_host()
    client = await connected(fleet)
    client.send_text("a")
    assert await client.texts(1) == [f"{first.side.channel}:a"]
    await until(lambda: len(the_conn(fleet).unacked) == 0)  # "a" acknowledged: not replayed
    replayed = counted("replayed_frames", "dead")
    await silenced(fleet, first, client, "b", "c")
    await fleet.kill(first)
    client.send_text("d")  # held: no owner now
    second = await fleet.add_host()
    assert await client.texts(3) == [f"{second.side.channel}:{t}" for t in "bcd"]
    scope, seen = fleet.app.instances[-1]
    assert scope["fleet"]["rehomed"] == 1
    assert [(e["type"], e.get("text"), e.get(REPLAYED)) for e in seen] == [
        ("websocket.connect", None, None), ("websocket.receive", "b", True),
        ("websocket.receive", "c", True), ("websocket.receive", "d", None)]
    assert counted("replayed_frames", "dead") - replayed == 2
    assert the_conn(fleet).state is OWNED
    await client.close()


async def test_quiet_socket__acknowledged_without_any_reply(fleet) -> None:
    host = await fleet.add_host()
    client = await connected(fleet, "/mute/")
    sent: list[Any] = []
    send = fleet.layer.send

    async def watch(channel: str, message: dict[str, Any]) -> None:
        if channel == fleet.gateway.side.channel:
            sent.append(message["items"])
        await send(channel, message)

    fleet.layer.send = watch  # type: ignore[method-assign]
    for n in range(3):
        client.send_text(str(n))
    owned = host.instances.running[the_conn(fleet).claim_id]
    await until(lambda: owned.handled == 3)
    # No reply goes back, so the ACK goes alone, within a quarter of a heartbeat interval.
    await until(lambda: len(the_conn(fleet).unacked) == 0, 1.0)
    assert the_conn(fleet).unacked.acked == 3
    assert sent and [kind for items in sent for kind, _, _ in items] == [wire.ACK] * len(sent)
    await client.close()


async def test_busy_socket__acks_ride_on_the_replies() -> None:
    fleet = await LoopbackFleet(EchoApp(), worker={"heartbeat_interval": 100.0,
                                                   "heartbeat_ttl": 300.0}).start()
    try:
        await fleet.add_host()
        client = await connected(fleet)
        kinds: list[list[str]] = []
        send = fleet.layer.send

        async def watch(channel: str, message: dict[str, Any]) -> None:
            if channel == fleet.gateway.side.channel:
                kinds.append([item[0] for item in message["items"]])
            await send(channel, message)

        fleet.layer.send = watch  # type: ignore[method-assign]
        for n in range(20):
            client.send_text(str(n))
            await client.texts(1)
        # The quiet timer is 25 s here: every ACK so far rode on a batch carrying replies.
        assert kinds and all(wire.SEND in batch for batch in kinds if wire.ACK in batch)
        assert sum(wire.ACK in batch for batch in kinds) >= 10
        assert len(the_conn(fleet).unacked) <= 2
        await client.close()
    finally:
        await fleet.stop()


@pytest.fixture
async def small_buffer() -> AsyncIterator[LoopbackFleet]:
    """A loopback fleet whose sockets keep at most 2 unacknowledged frames."""
    fleet = await LoopbackFleet(EchoApp(), replay_limit=2).start()
    yield fleet
    await fleet.stop()


async def test_overflowed_buffer__dead_owners_socket_closed_1012_not_rehomed(
    small_buffer: LoopbackFleet,
) -> None:
    fleet = small_buffer
    first, client = await fleet.add_host(), await connected(fleet)
    overflows = counted("replay_overflows", "dead")
    await silenced(fleet, first, client, "a", "b", "c")  # "a" dropped, unacknowledged
    assert the_conn(fleet).unacked.lost == 1
    await fleet.add_host()
    await fleet.kill(first)
    assert await client.next() == {"type": "websocket.close", "code": 1012}
    assert counted("replay_overflows", "dead") - overflows == 1
    assert len(fleet.app.instances) == 1  # no new app instance was started for it


async def test_overflow_heals__once_acknowledged_the_socket_can_be_rehomed_again(
    small_buffer: LoopbackFleet,
) -> None:
    first, client = await small_buffer.add_host(), await connected(small_buffer)
    fleet = small_buffer
    for text in "abc":  # three in a row: the buffer overflows until the ACKs come
        client.send_text(text)
    assert len(await client.texts(3)) == 3
    await until(lambda: the_conn(fleet).unacked.lost == 0 and not the_conn(fleet).unacked)
    second = await fleet.add_host()
    await fleet.kill(first)
    client.send_text("d")
    assert await client.texts(1) == [f"{second.side.channel}:d"]
    await client.close()


async def test_drain__no_frame_replayed_or_seen_twice(fleet) -> None:
    old = await fleet.add_host()
    client = await connected(fleet, "/slow/")
    replayed = counted("replayed_frames", "drain")
    client.send_text("0")
    await asyncio.sleep(0.05)
    drain = asyncio.ensure_future(old.drain(5))
    for n in range(1, 4):  # stashed while the app finishes "0", returned, then new ones
        await asyncio.sleep(0.05)
        client.send_text(str(n))
    new = await fleet.add_host()
    texts = await client.texts(4)
    assert [t.rsplit(":", 1)[1] for t in texts] == ["0", "1", "2", "3"]
    assert texts[0].startswith(old.side.channel) and texts[-1].startswith(new.side.channel)
    await drain
    assert counted("replayed_frames", "drain") == replayed
    assert not any(e.get(REPLAYED) for _, seen in fleet.app.instances for e in seen)
    await client.close()


async def test_drained_owner_dying_before_its_return__its_stash_replayed_instead(fleet) -> None:
    old = await fleet.add_host()
    client = await connected(fleet, "/slow/")

    async def ignore(conn_id: str, payload: None, sender: str) -> None:
        return None  # dies before it answers the FENCE: nothing is returned

    old.side.handle({wire.FENCE: ignore})
    replayed = counted("replayed_frames", "drain")
    client.send_text("a")  # the app is busy with it (0.2 s) when the drain begins
    await asyncio.sleep(0.05)
    drain = asyncio.ensure_future(old.drain(5))
    await asyncio.sleep(0.05)
    client.send_text("b")  # stashed by the old owner, never returned
    await until(lambda: the_conn(fleet).owner is None)  # its REHOME arrived
    await fleet.kill(old)
    drain.cancel()
    new = await fleet.add_host()
    assert await client.texts(2) == [f"{old.side.channel}:a", f"{new.side.channel}:b"]
    assert fleet.app.seen()[1] == {"type": "websocket.receive", "text": "b", REPLAYED: True}
    assert counted("replayed_frames", "drain") - replayed == 1
    await client.close()


async def test_rehome_off__no_buffer_and_no_acks() -> None:
    fleet = await LoopbackFleet(EchoApp(), rehome=False).start()
    try:
        host = await fleet.add_host()
        client = await connected(fleet)
        client.send_text("a")
        await client.texts(1)
        assert the_conn(fleet).unacked is None
        assert host.instances.running[the_conn(fleet).claim_id].taken == 0  # the envelope asked for no ACKs
        await client.close()
    finally:
        await fleet.stop()


async def test_drained_owner_dying_before_its_return__what_its_app_handled_is_not_replayed(
    fleet,
) -> None:
    old = await fleet.add_host()
    client = await connected(fleet, "/mute/")

    async def ignore(conn_id: str, payload: None, sender: str) -> None:
        return None  # dies before it answers the FENCE: nothing is returned

    old.side.handle({wire.FENCE: ignore})
    client.send_text("a")
    owned = old.instances.running[the_conn(fleet).claim_id]
    await until(lambda: owned.handled == 1)  # handled; its ACK not sent yet (nothing to ride on)
    drain = asyncio.ensure_future(old.drain(5))  # the app is idle: REHOME at once, ACK first
    await until(lambda: the_conn(fleet).owner is None)
    await fleet.kill(old)
    drain.cancel()
    await fleet.add_host()
    client.send_text("b")
    await until(lambda: len(fleet.app.instances) == 2 and len(fleet.app.seen()) == 2)
    assert fleet.app.seen() == [{"type": "websocket.connect"},
                                {"type": "websocket.receive", "text": "b"}]
    await client.close()
