"""A resume reaching the worker that runs the session (COMMON29 items 9, 10, 12): refused with
NO_SESSION, or attached: SUPERSEDE, CLAIM, RESUMED, the replay, then live; the earlier claims
route the home's channel messages; the relay's ACK counts start again for the new claim."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from session_world import I1, I2, I3, SID, WORKER, World, settle

from channels_fleet.relay import wire
from channels_fleet.relay.session_items import (
    NO_SESSION,
    RESUMED,
    SESSION_END,
    SUPERSEDE,
    session_mark,
)
from channels_fleet.worker.owned import CLOSED, DETACHED, RUNNING

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    world = World(resume_window=5.0)
    yield world
    await world.stop()


def replayed() -> float:
    return REGISTRY.get_sample_value("channels_fleet_session_frames_replayed_total") or 0.0


async def sent(world: World, *texts: str) -> None:
    instance = world.instances.find("c.1~1")
    assert instance is not None
    for text in texts:
        await instance.send({"type": "websocket.send", "text": text})


async def test_resume_of_a_detached_session__claim_resumed_replay_in_order_then_live(
        world: World) -> None:
    instance = await world.open()
    await sent(world, "1", "2", "3")
    await world.frame("c.1~1", 1, "x")
    await world.keeper.on_client_ack("c.1~1", 1, I1)
    await world.keeper.on_detach("c.1~1", 1006, I1)
    await sent(world, "4", "5")  # kept only
    world.relay.to(I1)
    before = replayed()
    await world.resume("c.1~2", last=2)
    assert world.relay.to(I2) == [
        [wire.CLAIM, "c.1~2", WORKER],
        [RESUMED, "c.1~2", [1, "chat", "", I1, "c.1~1"]],
        *([wire.SEND, "c.1~2", {"type": "websocket.send", "text": t, "fleet_seq": int(t)}]
          for t in "345"),
    ]
    assert world.relay.to(I1) == []  # detached: nobody to supersede
    assert replayed() == before + 3
    assert instance.state is RUNNING and instance.id == "c.1~2" and instance.iface == I2
    assert world.instances.running == {"c.1~2": instance}
    assert json.loads(world.entry()) == {"worker": WORKER, "claim": "c.1~2", "iface": I2}
    await instance.send({"type": "websocket.send", "text": "6"})
    assert world.relay.to(I2) == [
        [wire.SEND, "c.1~2", {"type": "websocket.send", "text": "6", "fleet_seq": 6}]]
    assert world.app.seen[-1]["type"] == "websocket.receive"  # no disconnect, no connect


async def test_the_window_stops_at_a_resume(world: World) -> None:
    world = World(resume_window=0.1)
    instance = await world.open()
    await world.keeper.on_detach("c.1~1", 1006, I1)
    await world.resume("c.1~2", last=0)
    await asyncio.sleep(0.2)
    assert instance.state is RUNNING and not instance.gone
    await world.stop()


async def test_resume_of_an_attached_session_supersedes_the_first_socket(world: World) -> None:
    instance = await world.open()
    await sent(world, "1")
    world.relay.to(I1)
    await world.resume("c.1~2", last=1)
    assert world.relay.to(I1) == [[SUPERSEDE, "c.1~1", 4001]]
    assert [item[0] for item in world.relay.to(I2)] == [wire.CLAIM, RESUMED]
    # A second resume takes it from the second socket: SUPERSEDE names that one's claim.
    await world.resume("c.1~3", last=1, iface=I3)
    assert world.relay.to(I2) == [[SUPERSEDE, "c.1~2", 4001]]
    assert instance.id == "c.1~3"
    # A DETACH of a superseded socket comes too late: ignored.
    await world.keeper.on_detach("c.1~2", 1006, I2)
    assert instance.state is RUNNING


async def test_origin_differs__no_session_origin__the_session_lives_on(world: World) -> None:
    instance = await world.open()
    await world.keeper.on_detach("c.1~1", 1006, I1)
    await world.resume("c.1~2", last=0, origin="https://evil.example")
    assert world.relay.to(I2) == [[NO_SESSION, "c.1~2", "origin"]]
    assert instance.state is DETACHED and instance.id == "c.1~1"


async def test_unreplayable__no_session_and_the_session_ends(world: World) -> None:
    instance = await world.open()
    await sent(world, "1", "2", "3")
    await world.keeper.on_client_ack("c.1~1", 3, I1)
    await world.keeper.on_detach("c.1~1", 1006, I1)
    world.relay.to(I1)
    await world.resume("c.1~2", last=1)  # frames 2 and 3 are gone (acked by the client)
    assert world.relay.to(I2) == [[NO_SESSION, "c.1~2", "unreplayable"]]
    assert world.relay.to(I1) == [[SESSION_END, "c.1~1", [1006, "unreplayable"]]]
    assert instance.state is CLOSED
    assert world.app.seen[-1] == {"type": "websocket.disconnect", "code": 1006}
    assert world.entry() is None
    await world.resume("c.1~3", last=3)  # the app has returned: gone from the table
    assert world.relay.to(I2) == [[NO_SESSION, "c.1~3", "unknown"]]


async def test_unknown_session__no_session_unknown(world: World) -> None:
    await world.resume("z.1~1", last=0, session_id="f" * 32)
    assert world.relay.to(I2) == [[NO_SESSION, "z.1~1", "unknown"]]


async def test_ended_but_not_yet_returned__no_session_ended(world: World) -> None:
    instance = await world.open()
    world.app.gate.clear()  # the app is busy: it has not taken its disconnect yet
    instance.release(1013)  # e.g. its output could not be relayed
    assert instance.gone and instance.state is CLOSED
    await world.resume("c.1~2", last=0)
    assert world.relay.to(I2) == [[NO_SESSION, "c.1~2", "ended"]]
    world.app.gate.set()


async def test_aliases_route_the_homes_messages__not_counted(world: World) -> None:
    instance = await world.open()
    await world.frame("c.1~1", 1, "a")
    assert instance.taken == 1
    await world.keeper.on_detach("c.1~1", 1006, I1)
    await world.resume("c.1~2", last=0)
    assert instance.taken == instance.handled == 0  # I2's Unacked starts empty
    # The home still names the first claim: a client frame its socket read before the
    # supersede, a channel message (here unreadable: no layer, dropped after being taken).
    await world.frame("c.1~1", 2, "late")
    await world.instances.on_message("", [b"body", ["c.1~1"]], I1)
    await settle()
    assert world.app.texts() == ["a", "late"]
    assert "fleet_uncounted" not in world.app.seen[-1]
    assert instance.taken == 0
    await world.frame("c.1~2", 3, "new")
    assert instance.taken == 1 and world.app.texts()[-1] == "new"
    # The app returns: its claims reach nothing any more.
    await world.instances.on_gone("c.1~2", 1000, I2)
    await settle()
    assert world.instances.find("c.1~1") is None and world.instances.find("c.1~2") is None


async def test_events_queued_at_the_resume_are_not_counted_for_the_new_claim(
        world: World) -> None:
    instance = await world.open()
    world.app.gate.clear()  # the app is busy with something
    await world.frame("c.1~1", 1, "a")
    await world.frame("c.1~1", 2, "b")
    await world.resume("c.1~2", last=0)
    await world.frame("c.1~2", 3, "c")
    world.app.gate.set()
    await settle()
    assert world.app.texts() == ["a", "b", "c"]
    assert instance.taken == 1  # only I2's frame


async def test_session_end_goes_to_the_home_with_the_first_claim(world: World) -> None:
    instance = await world.open()
    await world.resume("c.1~2", last=0)
    world.relay.to(I1)
    world.relay.to(I2)
    await instance.send({"type": "websocket.close", "code": 1000})
    await settle()
    assert world.relay.to(I2)[0] == [wire.SEND, "c.1~2", {"type": "websocket.close",
                                                          "code": 1000}]
    assert world.relay.to(I1) == [[SESSION_END, "c.1~1", [1000, "app"]]]


async def test_draining_worker_refuses_resumes(world: World) -> None:
    await world.open()
    world.side.draining = True
    await world.resume("c.1~2", last=0)
    assert world.relay.to(I2) == [[NO_SESSION, "c.1~2", "draining"]]


async def test_drain_ends_detached_sessions_with_1001(world: World) -> None:
    detached = await world.open()
    await world.keeper.on_detach("c.1~1", 1006, I1)
    assert world.keeper.drain() == 1
    await settle()
    assert detached.state is CLOSED
    assert world.app.seen[-1] == {"type": "websocket.disconnect", "code": 1001}
    assert [SESSION_END, "c.1~1", [1001, "drain"]] in world.relay.to(I1)


async def test_rehomed_away_from_its_home__keeps_the_home__claims_its_connection(
        world: World) -> None:
    """A session resumed on I2 (home I1), re-homed to this worker: the envelope's mark names
    the home; the home's connection is claimed, its messages reach the instance uncounted."""
    mark = session_mark(SID, seq=4, ack=2, home=I1, home_claim="c.1~1")
    instance = await world.open(mark=mark, claim="c.1~3", iface=I2)
    session = instance.session
    assert (session.home, session.home_claim) == (I1, "c.1~1")
    assert world.relay.to(I1) == [[wire.CLAIM, "c.1~1", WORKER]]
    assert world.instances.find("c.1~1") is instance and "c.1~1" in session.aliases
    await world.instances.on_message("", [b"body", ["c.1~1"]], I1)  # undecodable: dropped
    await world.frame("c.1~3", 5, "x")
    assert world.app.texts() == ["x"] and instance.taken == 1  # the message not counted
    assert world.app.seen[0]["type"] == "websocket.connect"
    # A resume on I3 later: RESUMED names the home, the adopter's records key on it.
    await world.resume("c.1~4", last=4, iface=I3)
    assert world.relay.to(I3)[1] == [RESUMED, "c.1~4", [5, "chat", "", I1, "c.1~1"]]
    await instance.send({"type": "websocket.close", "code": 1000})
    await settle()
    assert world.relay.to(I1)[-1] == [SESSION_END, "c.1~1", [1000, "app"]]


async def test_the_homes_messages_are_counted_for_the_home__dropped_once_given_back(
        world: World) -> None:
    """The home keeps what it forwards until handled (its Unacked): the instance counts it
    under the home claim, continuing that claim's counts; given back, it takes no more (the
    home replays them to the next owner)."""
    instance = await world.open()
    await world.frame("c.1~1", 1, "a")
    await world.resume("c.1~2", last=0)
    counts = instance.session.home_counts
    assert (counts.id, counts.iface, counts.taken) == ("c.1~1", I1, 1)
    await world.instances.on_message("", [b"body", ["c.1~1"]], I1)  # undecodable: dropped
    await world.frame("c.1~2", 2, "b")  # the app asked again: the message is handled
    assert (counts.taken, counts.handled) == (2, 2) and instance.taken == 1
    instance.begin_hand_back()
    await world.instances.on_message("", [b"body", ["c.1~1"]], I1)
    await settle()
    assert instance.stash == [] and counts.taken == 2


async def test_a_given_back_session_returns_no_home_message__and_nothing_marked(
        world: World) -> None:
    instance = await world.open()
    world.app.gate.clear()  # the app is busy: what comes now stays queued
    await world.frame("c.1~1", 1, "a")
    await world.frame("c.1~1", 2, "b")  # queued at the resume: marked as the old claim's
    await world.resume("c.1~2", last=0)
    await world.instances.on_message("", [b"home", ["c.1~1"]], I1)
    await world.frame("c.1~2", 3, "c")
    instance.begin_hand_back()
    instance.hand_back()
    returned = instance.session.returnable(instance.stash)
    # "a" was taken; "b" and the message came under the home claim: the home replays them.
    assert [e.get("text") for e in returned] == ["c"]
    assert not any("fleet_uncounted" in e for e in returned)
