"""The receivers of one event loop that wait for a message, by LIST and channel.

Each waits on a plain future (receiver.py); it is served oldest first, once. A receiver that
gives up cancels its future, which may stay queued until a message would reach it: serving
skips it, so a message never goes to a receiver that left.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

Futures = deque[asyncio.Future[bytes]]


class Waiters:
    """Futures of waiting receivers: LIST key -> channel -> futures, oldest first."""

    def __init__(self) -> None:
        self.by_key: dict[str, dict[str, Futures]] = {}

    def add(self, key: str, channel: str, future: asyncio.Future[bytes]) -> None:
        """Queue ``future`` for the next message of ``channel`` (stored in LIST ``key``)."""
        self.by_key.setdefault(key, {}).setdefault(channel, deque()).append(future)

    def remove(self, key: str, channel: str, future: asyncio.Future[bytes]) -> None:
        """Forget a receiver that gave up."""
        channels = self.by_key.get(key)
        if not channels:
            if channels is not None:
                del self.by_key[key]
            return
        waiters = channels.get(channel)
        if waiters is not None:
            # A served future was already popped; a cancelled one is still queued. (No
            # try/remove: the ValueError would format the future's repr, which is slow.)
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._none_left(key, channels, channel)
        if not channels and key in self.by_key:
            del self.by_key[key]

    def serve(self, key: str, channel: str, body: bytes) -> bool:
        """Give ``body`` to the oldest live receiver of ``channel``; False if none waits."""
        channels = self.by_key.get(key)
        if not channels:
            return False
        waiters = channels.get(channel)
        while waiters:
            future = waiters.popleft()
            if not waiters:
                # So the served receiver has nothing to remove.
                self._none_left(key, channels, channel)
            if not future.done():
                future.set_result(body)
                return True
        return False

    def serve_from(self, key: str, channel: str, take: Callable[[str], bytes | None]) -> None:
        """Serve the receivers of ``channel`` while ``take(channel)`` has messages for them."""
        channels = self.by_key.get(key)
        waiters = channels.get(channel) if channels else None
        if channels is None or waiters is None:
            return
        while waiters:
            if waiters[0].done():  # cancelled; its remove() finds it gone
                waiters.popleft()
                continue
            body = take(channel)
            if body is None:
                return
            waiters.popleft().set_result(body)
        self._none_left(key, channels, channel)

    def live(self, key: str) -> int:
        """How many receivers still wait on channels of LIST ``key``."""
        channels = self.by_key.get(key)
        if not channels:
            return 0
        return sum(1 for waiters in channels.values() for f in waiters if not f.done())

    def fail(self, key: str, exc: BaseException) -> None:
        """Tell every receiver waiting on LIST ``key`` why no message will come."""
        for waiters in self.by_key.pop(key, {}).values():
            for future in waiters:
                if not future.done():
                    future.set_exception(exc)

    def cancel_all(self) -> None:
        """Cancel every waiting receiver (the event loop's receiving closes)."""
        for channels in self.by_key.values():
            for waiters in channels.values():
                for future in waiters:
                    if not future.done():
                        future.cancel()
        self.by_key.clear()

    def _none_left(self, key: str, channels: dict[str, Futures], channel: str) -> None:
        del channels[channel]
        if not channels:
            del self.by_key[key]


__all__ = ["Waiters"]
