"""worker/forwards.py and its parts in adopter.py and the owner: what an adopter forwards to
another worker's session is ACKed by that worker (counts per forwarder), kept until handled,
held while that worker is dead and replayed, marked, to the next one (or delivered to the
adopter's own instance when the next owner is itself)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from session_world import I1, I2, WORKER, Relay, World, settle
from test_adopter import HOME, INBOX, W2, AppLayer, HashStore, Worker, quick, sid, until

from channels_fleet.layers.homing import HomedChannel
from channels_fleet.observability.metrics import METRICS
from channels_fleet.relay import wire
from channels_fleet.relay.session_items import session_mark
from channels_fleet.worker.forwards import Forwards

__all__ = ["quick"]  # the harness's autouse fixture, used here too

W3 = "fleet.worker.w3!3"


def replayed(body: bytes, claim: str = "h~1") -> list[Any]:
    return [wire.EVENT, claim, {"type": wire.CHANNEL_MESSAGE, "body": body, wire.REPLAYED: True}]


def message(body: bytes, claim: str = "h~1") -> list[Any]:
    return [wire.MESSAGE, "", [body, [claim]]]


def forwards(wait: float = 5.0, limit: int = 10) -> tuple[Relay, Forwards, list[Any]]:
    relay, delivered = Relay(), []
    fw = Forwards(relay, WORKER, limit, wait,  # type: ignore[arg-type]
                  lambda claim, event: delivered.append((claim, event)))
    return relay, fw, delivered


def test_kept_until_acked__a_dead_worker_s_claim_is_held__then_replayed_and_released() -> None:
    relay, fw, _ = forwards()
    for body in (b"m0", b"m1", b"m2"):
        assert fw.send(W2, "h~1", body)
    assert fw.workers() == {W2}
    fw.on_ack([["h~1", 1, 2]], W2)  # the first handled
    fw.on_ack([["h~1", 3, 3]], W3)  # not its worker's: ignored
    fw.workers_dead({W2})
    assert fw.holding and fw.workers() == set()
    assert not fw.send(W2, "h~1", b"m3")  # the hash still names the dead one: held
    fw.rerouted({"h~1": W2})
    assert relay.posts == []
    fw.rerouted({"h~1": W3})  # the next owner recorded itself
    assert [item for _, item in relay.posts] == [replayed(b"m1"), replayed(b"m2"),
                                                 message(b"m3")]
    assert {dest for dest, _ in relay.posts} == {W3} and not fw.holding
    fw.on_ack([["h~1", 2, 2]], W3)  # numbered from 0 for W3: m1, m2 handled
    relay.posts.clear()
    fw.workers_dead({W3})
    fw.rerouted({"h~1": W2, "x": W3})
    fw.rerouted({"h~1": I2})
    assert [item for _, item in relay.posts] == [replayed(b"m3")]


def test_a_route_to_another_live_worker_replays_first__a_hold_past_its_wait_drops_counted(
        ) -> None:
    relay, fw, _ = forwards(wait=0.0)
    fw.send(W2, "h~1", b"m0")
    assert fw.send(W3, "h~1", b"m1")  # moved (a drained owner handed it back)
    assert relay.posts == [(W3, replayed(b"m0"))]
    dropped = METRICS.messages_dropped.labels("other")._value.get()
    fw.workers_dead({W3})
    fw.send(W3, "h~1", b"m2")
    fw.rerouted({})
    assert METRICS.messages_dropped.labels("other")._value.get() - dropped == 3
    assert fw.sent == {} and fw.dead == set()


def test_bounded__the_oldest_go_counted__and_an_ended_session_is_forgotten() -> None:
    relay, fw, _ = forwards(limit=2)
    dropped = METRICS.messages_dropped.labels("other")._value.get()
    for n in range(4):
        fw.send(W2, "h~1", f"m{n}".encode())
    assert METRICS.messages_dropped.labels("other")._value.get() - dropped == 2
    fw.on_ack([["h~1", 3, 3]], W2)  # m0..m2 handled: m3 left
    fw.workers_dead({W2})
    relay.posts.clear()
    fw.rerouted({"h~1": W3})
    assert [item for _, item in relay.posts] == [replayed(b"m3")]
    fw.on_ack([["h~1", 1, 1]], W3)
    fw.rerouted({})  # its field is gone, nothing unhandled: forgotten
    assert fw.sent == {}


def test_the_next_owner_is_this_worker__delivered_to_its_own_instance_in_order() -> None:
    relay, fw, delivered = forwards()
    fw.send(W2, "h~1", b"m0")
    fw.workers_dead({W2})
    fw.send(W2, "h~1", b"m1")
    fw.rerouted({"h~1": WORKER})
    assert [(c, e["body"], e.get(wire.REPLAYED)) for c, e in delivered] == [
        ("h~1", b"m0", True), ("h~1", b"m1", None)]
    assert fw.sent == {} and relay.posts == []
    fw.send(W2, "h~2", b"z")  # recorded here before the hash is read again: at once
    fw.moved_here("h~2")
    assert delivered[-1] == ("h~2", {"type": wire.CHANNEL_MESSAGE, "body": b"z",
                                     wire.REPLAYED: True})
    assert fw.sent == {}


async def test_the_owner_acks_the_home_claim_s_messages_with_its_output__for_the_forwarder(
        ) -> None:
    """The counts ride to the socket's interface (I2) with the output they cover, naming who
    forwarded (the interface passes them on: Connections.on_ack)."""
    world = World()
    try:
        # Re-homed here from a dead owner: reached by its home claim, by alias.
        instance = await world.open(mark=session_mark(sid(1), home=I1, home_claim="h~1"),
                                    claim="c.2~1", iface=I2)
        instance.homed = HomedChannel(INBOX + "c1", lambda layer: True)
        assert instance.homed.take(AppLayer())
        body = {"type": wire.CHANNEL_MESSAGE, "body": b"x"}
        await world.instances.on_event("h~1", dict(body), I1)  # the home, while it lived
        await settle()
        assert world.acks.trailer(I2) == [wire.ACK, "", [["h~1", 1, 1, I1]]]
        for _ in range(2):  # the adopter of the dead home: counted from 0 for it
            await world.instances.on_message("", [b"y", ["h~1"]], WORKER)
        await settle()
        assert world.acks.trailer(I2) == [wire.ACK, "", [["h~1", 2, 2, WORKER]]]
        assert world.acks.trailer(I1) is None and world.acks.trailer(WORKER) is None
    finally:
        await world.stop()


@pytest.fixture
async def trio() -> Any:
    store, layer = HashStore(), AppLayer()
    workers = tuple(Worker(w, store, layer) for w in (WORKER, W2, W3))
    yield store, layer, workers
    for worker in workers:
        await worker.adopter.stop()
        await worker.world.stop()


async def test_the_holder_replays_a_dead_owner_s_unhandled_messages_to_the_next_one(
        trio: Any) -> None:
    store, layer, (w1, w2, w3) = trio
    await w1.session("c1", sid(1))
    gone = await w2.session("c2", sid(2))
    for worker in (w1, w2):
        worker.adopter.homes_dead({I1})
    await settle()
    assert w1.adopter.watched() == set()
    layer.push("m0", "c2")
    layer.push("m1", "c2")
    await until(lambda: w1.adopter.watched() == {W2})  # it watches the worker it forwards to
    assert w1.world.relay.to(W2) == [message(b"m0", "c2~1"), message(b"m1", "c2~1")]
    await w1.adopter.on_ack("", [["c2~1", 1, 1]], W2)  # m0 handled there
    w1.adopter.workers_dead({W2})  # w2 killed
    layer.push("m2", "c2")
    await asyncio.sleep(0.1)
    assert w1.world.relay.to(W3) == []  # held
    # The socket re-homed to w3: its instance (home claim c2~1 by alias) records itself.
    assert gone.session is not None
    moved = await w3.world.open(mark=session_mark(sid(2), home=I1, home_claim="c2~1"),
                                claim="c2~2", iface=I2)
    moved.homed = HomedChannel(INBOX + "c2", lambda layer: True)
    assert moved.homed.take(layer)
    w3.adopter.homes_dead({I1})
    await until(lambda: store.hashes[HOME].get(INBOX + "c2") == f"{W3} c2~1")
    await until(lambda: any(dest == W3 for dest, _ in w1.world.relay.posts))
    await settle()
    assert w1.world.relay.to(W3) == [replayed(b"m1", "c2~1"), message(b"m2", "c2~1")]


async def test_a_session_opened_under_a_home_known_dead_is_recorded_at_once(trio: Any) -> None:
    store, _, (w1, _, _) = trio
    await w1.session("c1", sid(1))
    w1.adopter.homes_dead({I1})
    await settle()
    later = await w1.session("c3", sid(3))
    w1.adopter.opened(later)
    await settle()
    assert store.hashes[HOME][INBOX + "c3"] == f"{WORKER} c3~1"
