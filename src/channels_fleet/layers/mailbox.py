"""Process-local messages of one layer, shared by every event loop that receives on it.

A layer's process-local channels (``specific.<client_prefix>!<id>``) share one LIST that
only this process pops. Any event loop may receive on any of them: ``async_to_sync`` runs
each call on a new loop, and threads run loops side by side. Each loop has its own receive
machinery (receiver.py); what one loop pops may be for a receiver on another loop, or for
a receive that has not started yet. So:

- a message for a receiver of the popping loop goes to it directly (receiver.py);
- any other is kept here, per channel, and the other loops pulling that LIST are woken
  (``call_soon_threadsafe``) to take it if they wait for it. It stays here when the loop
  that popped it closes, for the next receive on any loop;
- pops of one LIST take turns: one in flight per process at a time. A loop keeps the turn
  while no other waits for it; otherwise it hands it over after each pop. What one pop took
  is put away, and the wake-ups queued, before the next pop may start (its ``resume`` is
  queued behind them), so each channel's messages reach it in the order they were sent.

Buffers are bounded by the channel's capacity (the oldest is dropped, counted) and entries
expire with the layer's ``expiry``. One lock guards everything; it is never held across an
await, and wake-ups are only scheduled under it, never run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from . import _metrics

logger = logging.getLogger(__name__)

Entry = tuple[int, bytes]  # (expires_at_ms, body)


class Listener(Protocol):
    """The receiver of one event loop, as the mailbox wakes it (on its own loop)."""

    loop: asyncio.AbstractEventLoop

    def collect(self, key: str, channel: str) -> None:
        """Take what the mailbox holds for ``channel`` if this loop's receivers wait for it."""

    def resume(self, key: str) -> None:
        """The LIST ``key`` may be popped again: pop it if receivers still wait."""


class _Turns:
    """Whose pop of one LIST is in flight, and who waits to pop it next."""

    __slots__ = ("holder", "queued")

    def __init__(self, holder: Listener) -> None:
        self.holder: Listener | None = holder
        self.queued: list[Listener] = []


class Mailbox:
    """Buffers, listeners and pop turns of one layer's process-local channels (thread-safe)."""

    def __init__(self, capacity_of: Callable[[str], int], expiry_s: float) -> None:
        self.capacity_of = capacity_of
        self.expiry_s = expiry_s
        self.expired = 0
        self.dropped_full = 0
        self._lock = threading.Lock()
        self._buffers: dict[str, deque[Entry]] = {}
        self._listeners: dict[str, list[Listener]] = {}  # by LIST key
        self._turns: dict[str, _Turns] = {}

    # Messages

    def take(self, channel: str) -> bytes | None:
        """The oldest live message for ``channel``, if any."""
        with self._lock:
            return self._pop_live(channel)

    def listen(self, key: str, listener: Listener) -> None:
        """Wake ``listener`` for what other loops put here from LIST ``key`` (it pulls it too)."""
        with self._lock:
            listeners = self._listeners.setdefault(key, [])
            if listener not in listeners:
                listeners.append(listener)

    def unlisten(self, key: str, listener: Listener) -> None:
        with self._lock:
            listeners = self._listeners.get(key)
            if listeners is not None and listener in listeners:
                listeners.remove(listener)
                if not listeners:
                    del self._listeners[key]

    def holds_any(self) -> bool:
        return bool(self._buffers)

    def put(self, key: str, channel: str, expires: int, body: bytes, source: Listener) -> None:
        """Keep a message that ``source`` popped for no receiver of its own; wake the others."""
        with self._lock:
            buffer = self._buffers.setdefault(channel, deque())
            if len(buffer) >= self.capacity_of(channel):
                buffer.popleft()
                self.dropped_full += 1
                _metrics.dropped("buffer_full")
                logger.info("local buffer of %s full: dropped its oldest message", channel)
            buffer.append((expires, body))
            self._wake_listeners(key, channel, source)

    def give_back(
        self, key: str, channel: str, body: bytes, source: Listener | None
    ) -> None:
        """Put a message a cancelled receive was handed back at the head of its channel."""
        expires = int((time.time() + self.expiry_s) * 1000)
        with self._lock:
            self._buffers.setdefault(channel, deque()).appendleft((expires, body))
            self._wake_listeners(key, channel, source)

    def _pop_live(self, channel: str) -> bytes | None:
        body, expired = pop_live(self._buffers, channel)
        self._count_expired(expired)
        return body

    def _wake_listeners(self, key: str, channel: str, source: Listener | None) -> None:
        listeners = self._listeners.get(key)
        if not listeners:
            return
        for listener in list(listeners):
            if listener is not source and not _schedule(listener, listener.collect, key, channel):
                listeners.remove(listener)
        if not listeners:
            del self._listeners[key]

    # Turns: one pop of a process-local LIST in flight at a time

    def start_pop(self, key: str, puller: Listener) -> bool:
        """Take the turn to pop ``key``; if another loop has it, queue for :meth:`resume`."""
        with self._lock:
            turns = self._turns.get(key)
            if turns is None:
                self._turns[key] = _Turns(puller)
                return True
            if turns.holder is None or turns.holder is puller:
                turns.holder = puller
                if puller in turns.queued:
                    turns.queued.remove(puller)
                return True
            if puller not in turns.queued:
                turns.queued.append(puller)
            return False

    def end_pop(self, key: str, puller: Listener) -> None:
        """``puller``'s pop is put away: hand the turn over if other loops wait for it."""
        with self._lock:
            turns = self._turns.get(key)
            if turns is not None and turns.holder is puller and turns.queued:
                self._hand_over(key, turns)

    def leave(self, key: str, puller: Listener) -> None:
        """``puller`` stops pulling ``key`` (no receivers left, or its loop closes)."""
        with self._lock:
            turns = self._turns.get(key)
            if turns is None:
                return
            if puller in turns.queued:
                turns.queued.remove(puller)
            if turns.holder is puller:
                self._hand_over(key, turns)
            elif turns.holder is None and not turns.queued:
                del self._turns[key]

    def _hand_over(self, key: str, turns: _Turns) -> None:
        turns.holder = None
        queued, turns.queued = turns.queued, []
        for waiting in queued:
            if _schedule(waiting, waiting.resume, key):  # else its loop is closed
                turns.queued.append(waiting)
        if not turns.queued:
            del self._turns[key]

    # Expiry, flush, counters

    def _count_expired(self, amount: int) -> None:
        if amount:
            self.expired += amount
            _metrics.expired(amount)

    def sweep(self) -> None:
        """Drop expired messages, and buffers left empty."""
        with self._lock:
            self._count_expired(drop_expired(self._buffers))

    def clear(self) -> None:
        with self._lock:
            self._buffers.clear()

    def buffered(self) -> int:
        with self._lock:
            return sum(len(buffer) for buffer in self._buffers.values())


def pop_live(buffers: dict[str, deque[Entry]], channel: str) -> tuple[bytes | None, int]:
    """The oldest unexpired body of ``channel`` in ``buffers`` (or None), and how many expired."""
    buffer = buffers.get(channel)
    if buffer is None:
        return None, 0
    now_ms = time.time() * 1000
    expired = 0
    body = None
    while buffer:
        expires, candidate = buffer.popleft()
        if expires >= now_ms:
            body = candidate
            break
        expired += 1
    if not buffer:
        del buffers[channel]
    return body, expired


def drop_expired(buffers: dict[str, deque[Entry]]) -> int:
    """Drop expired entries, and buffers left empty; return how many were dropped."""
    now_ms = time.time() * 1000
    expired = 0
    for channel in list(buffers):
        buffer = buffers[channel]
        while buffer and buffer[0][0] < now_ms:
            buffer.popleft()
            expired += 1
        if not buffer:
            del buffers[channel]
    return expired


def _schedule(listener: Listener, callback: Callable[..., None], *args: str) -> bool:
    """Run ``callback`` on ``listener``'s loop soon; False if that loop is closed."""
    try:
        listener.loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # "Event loop is closed"
        return False
    return True
