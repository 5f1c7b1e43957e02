"""The mailbox shared by a layer's event loops: order, bounds, expiry, wake-ups, pop turns."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from channels_fleet.layers.mailbox import Mailbox

pytestmark = pytest.mark.timeout(10)
KEY = "asgi:q:{specific.abc!}"


class LoopInThread:
    """A receiver's stand-in: a real event loop running in its own thread, recording calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.calls: list[tuple[str, tuple[str, ...], int]] = []
        self.called = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def collect(self, key: str, channel: str) -> None:
        self.calls.append(("collect", (key, channel), threading.get_ident()))
        self.called.set()

    def resume(self, key: str) -> None:
        self.calls.append(("resume", (key,), threading.get_ident()))
        self.called.set()

    def wait_call(self) -> tuple[str, tuple[str, ...], int]:
        assert self.called.wait(5), "not woken"
        self.called.clear()
        return self.calls[-1]

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def loops() -> Iterator[list[LoopInThread]]:
    made = [LoopInThread() for _ in range(2)]
    yield made
    for loop in made:
        loop.close()


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox(lambda channel: 10, expiry_s=60)


def future_ms(seconds: float = 60) -> int:
    return int((time.time() + seconds) * 1000)


def test_take__oldest_first_then_nothing(mailbox, loops):
    source = loops[0]
    for n in range(3):
        mailbox.put(KEY, "a!1", future_ms(), b"%d" % n, source)
    assert [mailbox.take("a!1") for _ in range(4)] == [b"0", b"1", b"2", None]
    assert mailbox.buffered() == 0 and not mailbox.holds_any()


def test_take__expired_messages_are_skipped_and_counted(mailbox, loops):
    mailbox.put(KEY, "a!1", future_ms(-1), b"old", loops[0])
    mailbox.put(KEY, "a!1", future_ms(), b"new", loops[0])
    assert mailbox.take("a!1") == b"new"
    assert mailbox.expired == 1


def test_put__over_capacity_drops_the_oldest_and_counts_it(loops):
    mailbox = Mailbox(lambda channel: 2, expiry_s=60)
    for n in range(3):
        mailbox.put(KEY, "a!1", future_ms(), b"%d" % n, loops[0])
    assert mailbox.dropped_full == 1
    assert [mailbox.take("a!1"), mailbox.take("a!1")] == [b"1", b"2"]


def test_give_back__goes_before_what_is_waiting(mailbox, loops):
    mailbox.put(KEY, "a!1", future_ms(), b"later", loops[0])
    mailbox.give_back(KEY, "a!1", b"first", loops[0])
    assert [mailbox.take("a!1"), mailbox.take("a!1")] == [b"first", b"later"]


def test_sweep__drops_expired_and_empty_buffers(mailbox, loops):
    mailbox.put(KEY, "a!1", future_ms(-1), b"old", loops[0])
    mailbox.put(KEY, "a!2", future_ms(), b"kept", loops[0])
    mailbox.sweep()
    assert mailbox.buffered() == 1 and mailbox.expired == 1


def test_put__wakes_the_listener_on_its_own_loop_not_the_source(mailbox, loops):
    popper, listener = loops
    mailbox.listen(KEY, popper)
    mailbox.listen(KEY, listener)
    mailbox.put(KEY, "a!1", future_ms(), b"x", popper)
    assert listener.wait_call() == ("collect", (KEY, "a!1"), listener.thread.ident)
    assert popper.calls == []
    assert mailbox.take("a!1") == b"x"


def test_unlisten__no_more_wake_ups(mailbox, loops):
    popper, listener = loops
    mailbox.listen(KEY, listener)
    mailbox.unlisten(KEY, listener)
    mailbox.put(KEY, "a!1", future_ms(), b"x", popper)
    time.sleep(0.1)
    assert listener.calls == []
    assert mailbox.take("a!1") == b"x"  # kept for the next receive


def test_put__a_listener_whose_loop_closed_is_dropped_and_the_message_kept(mailbox, loops):
    popper, gone = loops
    mailbox.listen(KEY, gone)
    gone.close()
    mailbox.put(KEY, "a!1", future_ms(), b"x", popper)  # no RuntimeError
    mailbox.put(KEY, "a!1", future_ms(), b"y", popper)
    assert [mailbox.take("a!1"), mailbox.take("a!1")] == [b"x", b"y"]


def first_holds_second_queued(mailbox: Mailbox, loops: list[LoopInThread]) -> None:
    first, second = loops
    assert mailbox.start_pop(KEY, first)
    mailbox.end_pop(KEY, first)  # nobody else waits: it keeps the turn
    assert not mailbox.start_pop(KEY, second)  # queued
    assert mailbox.start_pop(KEY, first)


def test_turns__one_pop_at_a_time_the_next_loop_resumed_after(mailbox, loops):
    first_holds_second_queued(mailbox, loops)
    first, second = loops
    mailbox.end_pop(KEY, first)  # handed over: free for whoever asks first
    assert second.wait_call() == ("resume", (KEY,), second.thread.ident)
    assert mailbox.start_pop(KEY, second)
    assert not mailbox.start_pop(KEY, first)
    mailbox.leave(KEY, first)  # stops pulling: not resumed
    mailbox.end_pop(KEY, second)
    time.sleep(0.1)
    assert first.calls == []
    assert mailbox.start_pop(KEY, second)


def test_turns__a_holder_that_stops_pulling_hands_the_turn_over(mailbox, loops):
    first_holds_second_queued(mailbox, loops)
    first, second = loops
    mailbox.leave(KEY, first)
    assert second.wait_call() == ("resume", (KEY,), second.thread.ident)
    assert mailbox.start_pop(KEY, second)


def test_turns__a_queued_loop_that_closed_does_not_block_the_others(mailbox, loops):
    first_holds_second_queued(mailbox, loops)
    first, gone = loops
    gone.close()
    mailbox.end_pop(KEY, first)  # no RuntimeError; the closed loop is forgotten
    mailbox.leave(KEY, first)
    assert mailbox.start_pop(KEY, gone) is True  # nothing held: anyone may pop
