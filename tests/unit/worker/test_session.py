"""A resumable session's app instance on its worker: numbering, detach, the window, the outbox's
bound, client frames (duplicates), the registry (docs/resume-protocol.md, COMMON29 items 3-8)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from session_world import I1, SID, WORKER, World, settle

from channels_fleet.relay import wire
from channels_fleet.relay.session_items import SESSION_END, session_mark
from channels_fleet.worker.owned import CLOSED, DETACHED

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    world = World(resume_window=5.0, heartbeat_interval=1.0, heartbeat_ttl=3.0)
    yield world
    await world.stop()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"channels_fleet_{name}", labels) or 0.0


async def test_sends_are_numbered__accept_and_close_are_not(world: World) -> None:
    instance = await world.open()
    message = {"type": "websocket.send", "text": "a"}
    await instance.send(message)  # type: ignore[arg-type]
    await instance.send({"type": "websocket.send", "bytes": b"b"})
    assert message == {"type": "websocket.send", "text": "a"}  # the app's own dict untouched
    assert world.relay.to(I1) == [
        [wire.SEND, "c.1~1", {"type": "websocket.accept", "subprotocol": "chat"}],
        [wire.SEND, "c.1~1", {"type": "websocket.send", "text": "a", "fleet_seq": 1}],
        [wire.SEND, "c.1~1", {"type": "websocket.send", "bytes": b"b", "fleet_seq": 2}],
    ]
    await instance.send({"type": "websocket.close", "code": 4000})
    await settle()
    items = world.relay.to(I1)
    assert items[0] == [wire.SEND, "c.1~1", {"type": "websocket.close", "code": 4000}]
    assert [SESSION_END, "c.1~1", [4000, "app"]] in items  # the home: its own socket here
    assert world.entry() is None  # the registry forgets it


async def test_numbering_continues_from_the_envelopes_mark(world: World) -> None:
    """A re-homed session: the new instance numbers on from the interface's mark, and no
    resume can ask for the frames numbered before it (they are not here)."""
    instance = await world.open(mark=session_mark(SID, seq=7, ack=3))
    await instance.send({"type": "websocket.send", "text": "a"})
    assert world.relay.to(I1)[-1][2]["fleet_seq"] == 8
    assert instance.session is not None and instance.session.ack == 3
    assert not instance.session.outbox.can_replay(5)


async def test_the_registry_says_where_it_runs_with_window_plus_heartbeat_ttl(
        world: World) -> None:
    await world.open()
    assert json.loads(world.entry()) == {"worker": WORKER, "claim": "c.1~1", "iface": I1}
    assert world.store.ttl_ms[f"fleet:session:{{{SID}}}"] == 8000  # 5 s + 3 s


async def test_detached__sends_kept_not_relayed__registry_without_iface(world: World) -> None:
    instance = await world.open()
    world.relay.to(I1)
    detached = sample("sessions_detached")
    await world.keeper.on_detach("c.1~1", 1006, I1)
    await settle()
    assert instance.state is DETACHED
    assert sample("sessions_detached") == detached + 1
    assert json.loads(world.entry())["iface"] == ""
    await instance.send({"type": "websocket.send", "text": "kept"})
    assert world.relay.to(I1) == []
    assert instance.session is not None and instance.session.outbox.unacked() == [(1, "kept")]
    assert world.app.seen[-1]["type"] == "websocket.connect"  # no disconnect: it runs on


async def test_detach_of_a_plain_or_ended_instance_is_ignored(world: World) -> None:
    instance = await world.open()
    await world.keeper.on_detach("nobody~1", 1006, I1)
    await instance.send({"type": "websocket.close"})
    await world.keeper.on_detach("c.1~1", 1006, I1)
    assert instance.state is CLOSED


async def test_window_over__disconnect_1006_session_end_to_home(world: World) -> None:
    world = World(resume_window=0.05)
    instance = await world.open()
    world.relay.to(I1)
    ended = sample("sessions_ended_total", reason="window")
    await world.keeper.on_detach("c.1~1", 1006, I1)
    await asyncio.sleep(0.1)
    assert world.app.seen[-1] == {"type": "websocket.disconnect", "code": 1006}
    assert instance.state is CLOSED
    # No socket: no END for the last interface; the home drops its stub on SESSION_END.
    assert world.relay.to(I1) == [[SESSION_END, "c.1~1", [1006, "window"]]]
    assert world.entry() is None
    assert sample("sessions_ended_total", reason="window") == ended + 1
    await world.stop()


async def test_window_zero__ends_at_detach(world: World) -> None:
    world = World(resume_window=0)
    instance = await world.open()
    await world.keeper.on_detach("c.1~1", 1006, I1)
    await settle()
    assert instance.state is CLOSED and world.app.seen[-1]["code"] == 1006
    await world.stop()


async def test_outbox_overflow_while_detached_ends_it(world: World) -> None:
    world = World(resume_frames=2)
    instance = await world.open()
    await instance.send({"type": "websocket.send", "text": "1"})  # relayed, never acked
    await world.keeper.on_detach("c.1~1", 1006, I1)
    world.relay.to(I1)
    await instance.send({"type": "websocket.send", "text": "2"})
    assert instance.state is DETACHED  # 1 and 2 kept: nothing lost yet
    await instance.send({"type": "websocket.send", "text": "3"})  # frame 1 goes: lost
    await settle()
    assert instance.state is CLOSED
    assert world.app.seen[-1] == {"type": "websocket.disconnect", "code": 1006}
    assert world.relay.to(I1) == [[SESSION_END, "c.1~1", [1006, "overflow"]]]
    await world.stop()


async def test_acked_frames_dropped_at_the_bound_are_no_overflow(world: World) -> None:
    world = World(resume_frames=1)
    instance = await world.open()
    await instance.send({"type": "websocket.send", "text": "1"})
    await world.keeper.on_client_ack("c.1~1", 1, I1)
    await world.keeper.on_detach("c.1~1", 1006, I1)
    await instance.send({"type": "websocket.send", "text": "2"})
    assert instance.state is DETACHED
    await world.stop()


async def test_client_frames__duplicates_dropped_but_counted__fleet_seq_stripped(
        world: World) -> None:
    instance = await world.open()
    for seq, text in ((1, "a"), (2, "b"), (2, "b"), (1, "a"), (3, "c")):
        await world.frame("c.1~1", seq, text)
    assert world.app.texts() == ["a", "b", "c"]
    assert all("fleet_seq" not in e for e in world.app.seen)
    assert instance.taken == 5  # the interface recorded all five in its Unacked
    assert instance.session is not None and instance.session.ack == 3


async def test_client_ack_trims_the_outbox__a_bad_one_is_ignored(world: World) -> None:
    instance = await world.open()
    for text in "abc":
        await instance.send({"type": "websocket.send", "text": text})
    await world.keeper.on_client_ack("c.1~1", 2, I1)
    await world.keeper.on_client_ack("c.1~1", 99, I1)  # never sent: logged, ignored
    assert instance.session is not None and instance.session.outbox.unacked() == [(3, "c")]


async def test_client_gone__session_over_with_the_clients_reason(world: World) -> None:
    instance = await world.open()
    world.relay.to(I1)
    protocol = sample("sessions_ended_total", reason="protocol")
    await world.instances.on_gone("c.1~1", 1002, I1)
    await settle()
    assert world.app.seen[-1] == {"type": "websocket.disconnect", "code": 1002}
    assert [SESSION_END, "c.1~1", [1002, "protocol"]] in world.relay.to(I1)
    assert sample("sessions_ended_total", reason="protocol") == protocol + 1
    assert world.entry() is None and instance.state is CLOSED


async def test_registry_failures_logged_once_never_crash(world: World, caplog) -> None:
    world.store.fail = True
    instance = await world.open()
    await world.keeper.on_detach("c.1~1", 1006, I1)
    await settle()
    assert instance.state is DETACHED
    assert len([r for r in caplog.records if "registry" in r.getMessage()]) == 1


async def test_a_send_off_the_fast_path_is_numbered_too(world: World) -> None:
    """A message that is a dict subclass is checked (conformance.py), then numbered alike."""

    class Message(dict):  # type: ignore[type-arg]
        pass

    await world.open()
    world.relay.to(I1)
    instance = world.instances.find("c.1~1")
    assert instance is not None
    await instance.send(Message(type="websocket.send", text="a"))  # type: ignore[arg-type]
    assert world.relay.to(I1) == [
        [wire.SEND, "c.1~1", {"type": "websocket.send", "text": "a", "fleet_seq": 1}]]


async def test_handed_back_for_a_rehome__the_session_goes_on_elsewhere(world: World) -> None:
    """A drain hands an attached session's socket back: its app returns here, but the session
    is the next owner's: no SESSION_END, the registry entry left for the next owner."""
    instance = await world.open()
    world.relay.to(I1)
    instance.begin_hand_back()
    instance.hand_back()
    instance.move_away(1012)
    await settle()
    assert instance.task is not None and instance.task.done()
    assert world.relay.to(I1) == []
    assert world.entry() is not None


async def test_a_detached_session_abandoned_leaves_the_detached_gauge(world: World) -> None:
    instance = await world.open()
    detached = sample("sessions_detached")
    await world.keeper.on_detach("c.1~1", 1006, I1)
    instance.abandon()  # this worker declared dead
    await settle()
    assert instance.task is not None and instance.task.done()
    assert sample("sessions_detached") == detached


async def test_live_entries_are_put_again_each_half_ttl(world: World) -> None:
    world = World(resume_window=0.1, heartbeat_interval=0.05, heartbeat_ttl=0.1)
    await world.open()
    refreshing = world.side.tasks.spawn(world.keeper.refreshing(), "refresh")
    world.store.data.clear()  # as if it had expired
    await asyncio.sleep(0.15)
    assert json.loads(world.entry())["claim"] == "c.1~1"
    refreshing.cancel()
    await world.stop()


async def test_a_client_frame_with_a_bad_number_is_dropped(world: World) -> None:
    await world.open()
    await world.frame("c.1~1", "7", "junk")  # type: ignore[arg-type]
    await world.frame("c.1~1", 1, "a")
    assert world.app.texts() == ["a"]
