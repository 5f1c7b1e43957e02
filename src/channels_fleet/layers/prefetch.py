"""Messages of shared channels pulled ahead of their receivers, and their way back to Redis.

A pull loop of a shared channel (receiver.py) takes up to ``prefetch`` messages more than it
has receivers waiting. They are held here, per channel, for this event loop's next receivers,
but only while those keep coming back: ``PREFETCH_LINGER_S`` after a channel's last message
was kept, what is still unread is pushed back to the head of its LIST for other processes.
What a closing pull loop salvages goes back the same way. (Process-local channels are popped
by this process only; their messages wait in the mailbox, mailbox.py.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from .executor import Executor
from .keys import pack_element
from .mailbox import Entry, drop_expired, pop_live

logger = logging.getLogger(__name__)

PREFETCH_LINGER_S = 0.25


class Prefetch:
    """Prefetched messages of one event loop's shared channels, returned when left unread."""

    def __init__(
        self, executor: Executor, expiry_s: float, count_expired: Callable[[int], None]
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.executor = executor
        self.expiry_s = expiry_s
        self.count_expired = count_expired
        #: channel -> its prefetched messages, oldest first.
        self.buffers: dict[str, deque[Entry]] = {}
        self._returns: dict[str, tuple[str, asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def take(self, channel: str) -> bytes | None:
        """The oldest live message prefetched for ``channel``, if any."""
        if channel not in self.buffers:
            return None
        body, expired = pop_live(self.buffers, channel)
        self.count_expired(expired)
        return body

    def keep(self, key: str, channel: str, expires: int, body: bytes) -> None:
        """Hold a message of ``channel`` (from LIST ``key``) that no receiver here waits for."""
        self.buffers.setdefault(channel, deque()).append((expires, body))
        self._schedule_return(key, channel)

    def give_back(self, key: str, channel: str, body: bytes) -> None:
        """Hold first a message a receiver gave up (its expiry starts again)."""
        expires = int((time.time() + self.expiry_s) * 1000)
        self.buffers.setdefault(channel, deque()).appendleft((expires, body))
        self._schedule_return(key, channel)

    def push_back(self, key: str, elements: list[bytes]) -> None:
        """Return packed elements to the head of LIST ``key``, in their order, in the background."""
        task = self.loop.create_task(self._push_back(key, elements))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def held(self) -> int:
        """How many messages are held."""
        return sum(len(buffer) for buffer in self.buffers.values())

    def sweep(self) -> None:
        """Drop expired messages and empty buffers."""
        self.count_expired(drop_expired(self.buffers))

    def clear(self) -> None:
        """Forget every held message (the layer's ``flush``)."""
        self.buffers.clear()

    async def close(self) -> None:
        """Return every unread message to Redis and wait for the returns to finish."""
        for channel, (key, handle) in list(self._returns.items()):
            handle.cancel()
            self._return_unread(key, channel)
        self._returns.clear()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self.buffers.clear()

    def _schedule_return(self, key: str, channel: str) -> None:
        previous = self._returns.pop(channel, None)
        if previous is not None:
            previous[1].cancel()
        self._returns[channel] = (
            key, self.loop.call_later(PREFETCH_LINGER_S, self._return_unread, key, channel)
        )

    def _return_unread(self, key: str, channel: str) -> None:
        self._returns.pop(channel, None)
        buffer = self.buffers.pop(channel, None)
        if not buffer:
            return
        self.push_back(key, [pack_element(expires, channel, body) for expires, body in buffer])

    async def _push_back(self, key: str, elements: list[bytes]) -> None:
        try:
            await self.executor.call(key, "LPUSH", key, *reversed(elements))
        except Exception as exc:
            logger.warning("lost %d message(s) of %s returning them: %s", len(elements), key, exc)


__all__ = ["PREFETCH_LINGER_S", "Prefetch"]
