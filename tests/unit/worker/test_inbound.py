"""inbound.py: an app instance's events in order and bounded, handed straight to a waiting
receive, waiting receives served in the order they asked, and nothing lost when a receive is
given up (as ``asyncio.Queue.get`` guaranteed)."""

from __future__ import annotations

import asyncio

import pytest

from channels_fleet.worker.inbound import Inbound

pytestmark = pytest.mark.timeout(5)


async def test_queued_events_come_out_in_order() -> None:
    inbound = Inbound(3)
    for event in (1, 2, 3):
        inbound.put(event)
    assert inbound.qsize() == 3 and inbound.full() and not inbound.waiting
    assert [inbound.next().result() for _ in range(3)] == [1, 2, 3]
    assert inbound.empty()


async def test_a_waiting_receive_gets_the_next_event_without_queueing_it() -> None:
    inbound = Inbound(3)
    future = inbound.next()
    assert not future.done() and inbound.waiting
    inbound.put(7)
    assert future.result() == 7
    assert inbound.empty() and not inbound.waiting


async def test_waiting_receives_are_served_in_the_order_they_asked() -> None:
    """A second receive (Starlette's is_disconnected() beside a listener) does not strand
    the first."""
    inbound = Inbound(3)
    first, second = inbound.next(), inbound.next()
    inbound.put(1)
    inbound.put(2)
    assert (first.result(), second.result()) == (1, 2)


async def test_a_receive_given_up_before_its_event__puts_the_event_back_first() -> None:
    inbound = Inbound(3)
    future = inbound.next()
    inbound.put(5)  # handed to the receive, which is given up before reading it
    inbound.put(6)
    inbound.unread(future)
    assert [inbound.next().result(), inbound.next().result()] == [5, 6]


async def test_a_receive_given_up_while_waiting__leaves_later_events_to_the_next() -> None:
    inbound = Inbound(3)
    for _ in range(100):  # polled and given up, over and over: nothing piles up
        inbound.unread(inbound.next())
    assert not inbound.waiting and not inbound.receivers
    cancelled = inbound.next()
    cancelled.cancel()  # as a cancelled task cancels the future it awaits
    inbound.unread(cancelled)
    inbound.put(8)
    assert inbound.qsize() == 1 and inbound.next().result() == 8


async def test_a_cancelled_receive_task_puts_back_what_it_was_handed() -> None:
    inbound = Inbound(3)

    async def receive() -> int:
        future = inbound.next()
        try:
            return await future
        except asyncio.CancelledError:
            inbound.unread(future)
            raise

    task = asyncio.ensure_future(receive())
    await asyncio.sleep(0)
    inbound.put(9)
    task.cancel()  # in the same turn: the event reached the future, not the task
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inbound.next().result() == 9


async def test_full_refuses_and_make_room_drops_the_oldest() -> None:
    inbound = Inbound(3)
    for event in (1, 2, 3):
        inbound.put(event)
    with pytest.raises(asyncio.QueueFull):
        inbound.put(4)
    inbound.make_room()
    inbound.put(4)
    assert inbound.drain() == [2, 3, 4] and inbound.empty()
