"""inbound.py: an app instance's events in order, bounded, handed straight to a waiting receive,
and nothing lost when a receive is given up or an event is dropped by ``take``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from channels_fleet.worker.inbound import Inbound

pytestmark = pytest.mark.timeout(5)


def taking(dropped: set[int] | None = None) -> tuple[Inbound, list[int]]:
    """An Inbound of ints whose ``take`` records each event and drops those in ``dropped``."""
    taken: list[int] = []

    def take(event: int) -> int | None:
        taken.append(event)
        return None if event in (dropped or set()) else event

    return Inbound(3, take), taken


async def test_queued_events_come_out_in_order_each_taken_when_asked_for() -> None:
    inbound, taken = taking()
    for event in (1, 2, 3):
        inbound.put(event)
    assert taken == [] and inbound.qsize() == 3 and inbound.full()
    assert [inbound.next().result() for _ in range(3)] == [1, 2, 3]
    assert taken == [1, 2, 3] and inbound.empty()


async def test_a_waiting_receive_gets_the_next_event_without_queueing_it() -> None:
    inbound, taken = taking()
    future = inbound.next()
    assert not future.done() and inbound.waiting
    inbound.put(7)
    assert future.result() == 7 and taken == [7]
    assert inbound.empty() and not inbound.waiting


async def test_an_event_take_drops_leaves_the_receive_waiting_for_the_next() -> None:
    inbound, taken = taking(dropped={1})
    future = inbound.next()
    inbound.put(1)
    assert not future.done() and inbound.waiting
    inbound.put(2)
    assert future.result() == 2 and taken == [1, 2]
    inbound.put(1)
    inbound.put(3)
    assert inbound.next().result() == 3  # the queued drop skipped on the way


async def test_an_event_for_a_given_up_receive_stays_queued_for_the_next() -> None:
    inbound, taken = taking()
    future = inbound.next()
    future.cancel()
    assert not inbound.waiting
    inbound.put(5)
    assert taken == [] and inbound.qsize() == 1
    assert inbound.next().result() == 5


async def test_full_refuses_and_make_room_drops_the_oldest() -> None:
    inbound, _ = taking()
    for event in (1, 2, 3):
        inbound.put(event)
    with pytest.raises(asyncio.QueueFull):
        inbound.put(4)
    inbound.make_room()
    inbound.put(4)
    assert inbound.drain() == [2, 3, 4] and inbound.empty()


async def test_what_take_raises_is_raised_to_the_receive() -> None:
    def take(event: Any) -> Any:
        raise ValueError(f"unreadable {event}")

    inbound = Inbound(3, take)
    waiting = inbound.next()
    inbound.put("a")
    with pytest.raises(ValueError, match="unreadable a"):
        waiting.result()
    inbound.put("b")
    with pytest.raises(ValueError, match="unreadable b"):
        inbound.next().result()
