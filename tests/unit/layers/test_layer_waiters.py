"""Waiters: receivers served oldest first, once; one that left is skipped, never served."""

from __future__ import annotations

import asyncio

import pytest

from channels_fleet.layers.waiters import Waiters


def futures(n: int) -> list[asyncio.Future[bytes]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(n)]


async def test_serve__oldest_live_receiver_first__none_left_forgets_the_list() -> None:
    waiters = Waiters()
    first, second = futures(2)
    waiters.add("k", "c", first)
    waiters.add("k", "c", second)
    assert waiters.live("k") == 2
    assert waiters.serve("k", "c", b"1") and first.result() == b"1"
    assert waiters.serve("k", "c", b"2") and second.result() == b"2"
    assert not waiters.serve("k", "c", b"3")
    assert waiters.by_key == {}


async def test_serve__skips_a_receiver_that_gave_up() -> None:
    waiters = Waiters()
    gone, there = futures(2)
    waiters.add("k", "c", gone)
    waiters.add("k", "c", there)
    gone.cancel()
    assert waiters.live("k") == 1
    assert waiters.serve("k", "c", b"x") and there.result() == b"x"


async def test_remove__the_last_one_forgets_channel_and_list() -> None:
    waiters = Waiters()
    (future,) = futures(1)
    waiters.add("k", "c", future)
    future.cancel()
    waiters.remove("k", "c", future)
    assert waiters.by_key == {} and waiters.live("k") == 0
    waiters.remove("k", "c", future)  # twice: nothing left to forget, no error


async def test_serve_from__serves_while_the_source_has_messages() -> None:
    waiters = Waiters()
    a, b, c = futures(3)
    for future in (a, b, c):
        waiters.add("k", "ch", future)
    b.cancel()
    source = [b"1", b"2"]
    waiters.serve_from("k", "ch", lambda channel: source.pop(0) if source else None)
    assert (a.result(), c.result()) == (b"1", b"2")
    assert waiters.by_key == {}
    waiters.add("k", "ch", (d := futures(1)[0]))
    waiters.serve_from("k", "ch", lambda channel: None)  # nothing yet: d keeps waiting
    assert not d.done() and waiters.live("k") == 1


async def test_fail_and_cancel_all() -> None:
    waiters = Waiters()
    a, b = futures(2)
    waiters.add("k", "c", a)
    waiters.add("other", "c", b)
    waiters.fail("k", ConnectionError("down"))
    with pytest.raises(ConnectionError, match="down"):
        a.result()
    waiters.cancel_all()
    assert b.cancelled() and waiters.by_key == {}
