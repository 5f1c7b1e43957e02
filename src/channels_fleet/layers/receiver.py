"""Receives for one event loop: one pull loop per LIST that has waiting receivers.

A pull loop takes messages off its LIST while receivers wait on it. While the LIST has
messages it pops without blocking (``LPOP key n``) over the shared pipelined connection, so
the pops of every busy LIST leave in one write; once the LIST is empty it blocks with
``BLMPOP <block> 1 key LEFT COUNT n`` on a dedicated connection.

- A process-local LIST (``a.b!``) is pulled in batches of up to ``batch`` elements; each
  message goes to the receiver of this loop waiting on its full channel name, or into the
  layer's mailbox (mailbox.py), where the receivers of any loop find it. Loops pulling the
  same process-local LIST take turns (one pop in flight per process).
- A normal (shared) channel is pulled for its waiting receivers plus at most ``prefetch``
  more, held for this loop's next receivers only while they keep coming back, then pushed
  back to Redis (prefetch.py). ``prefetch=0`` pulls exactly as many as there are waiters.

Receivers only wait on a local future (waiters.py), so cancelling ``receive()`` never
interrupts a BLMPOP that may already have taken a message off Redis. ``block`` stays below the
connection's ``socket_timeout`` (5 s unless the hosts say otherwise: connection.py), so an
idle receive waits forever.

When the loop closes, its pull loops are cancelled, but a pop already sent is not dropped:
a BLMPOP is unblocked and its reply read (node.py), an LPOP's reply is awaited, and
what they took is salvaged: process-local messages into the mailbox, shared ones back to
the head of their LIST.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..exceptions import RedisPermissionError
from . import _metrics
from .executor import Executor
from .keys import is_process_local, unpack_element
from .mailbox import Entry, Mailbox
from .prefetch import Prefetch
from .sender import Sender
from .waiters import Waiters

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0


class Receiver:
    """Waiters and pull loops of one event loop."""

    def __init__(
        self,
        executor: Executor,
        sender: Sender,
        mailbox: Mailbox,
        batch: int,
        prefetch: int,
        block_timeout: Callable[[str], float],
        expiry_s: float,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.executor = executor
        self.sender = sender
        self.mailbox = mailbox
        self.batch = batch
        self.prefetch = prefetch
        self.block_timeout = block_timeout
        self.expiry_s = expiry_s
        self.waiters = Waiters()
        # Prefetched messages of shared channels (process-local ones are in the mailbox).
        self.prefetched = Prefetch(executor, expiry_s, self._count_expired)
        self.pullers: dict[str, asyncio.Task[None]] = {}
        self.expired = 0
        #: key -> since when this loop's pops of that LIST have waited for an answer (set by
        #: the first pop of an outage, kept across failed pull loops, cleared by a reply).
        self.unanswered: dict[str, float] = {}
        #: LISTs a caller pops and routes itself (take_all): what a cancelled pop of one took
        #: goes back to the LIST, for whoever pops it next (nobody here reads it).
        self.routed: set[str] = set()
        self._turns: dict[str, asyncio.Future[None]] = {}
        self._last_sweep = time.monotonic()
        self._sweep_handle: asyncio.TimerHandle | None = None

    @property
    def buffers(self) -> dict[str, deque[Entry]]:
        """Prefetched messages of shared channels, by channel (see prefetch.py)."""
        return self.prefetched.buffers

    async def receive(self, key: str, channel: str) -> bytes:
        """Wait for the next message body for ``channel`` (stored in LIST ``key``)."""
        future = self.wait(key, channel)
        try:
            return await future
        except asyncio.CancelledError:
            self.unwait(key, channel, future)
            raise

    def wait(self, key: str, channel: str) -> asyncio.Future[bytes]:
        """``receive`` without a coroutine: a future of the next body for ``channel``.

        For a dispatcher that waits on many sources at once (``channels_fleet.worker.dispatch``):
        no task per message. Give it up with :meth:`unwait`, never by cancelling it alone.
        """
        future: asyncio.Future[bytes] = self.loop.create_future()
        local = is_process_local(channel)
        pulled = key in self.pullers
        if not local:
            body = self.prefetched.take(channel)
        elif pulled:
            body = self.mailbox.take(channel)
        else:
            # Listen first: what another loop puts after this take wakes us (collect).
            self.mailbox.listen(key, self)
            body = self.mailbox.take(channel)
            if body is not None:
                self.mailbox.unlisten(key, self)
        if body is not None:
            future.set_result(body)
            return future
        self.waiters.add(key, channel, future)
        if not pulled:
            self.pullers[key] = self.loop.create_task(self._pull(key, local))
        return future

    async def take_all(self, key: str, busy: bool) -> list[tuple[list[str], bytes]]:
        """Pop the process-local LIST ``key`` for a caller that routes its messages itself
        (no waiters, no mailbox): up to ``batch`` unexpired (channel names, body) pairs, in
        order. Blocks until there is one, unless ``busy`` (the last pop returned some): then
        the pop rides with the next flush of sends."""
        self.unanswered.setdefault(key, time.monotonic())
        self.routed.add(key)
        elements = await self._pop(key, True, 0, busy)
        self.unanswered.pop(key, None)
        now_ms = time.time() * 1000
        taken: list[tuple[list[str], bytes]] = []
        expired = 0
        for element in elements or ():
            expires, names, body = unpack_element(element)
            if expires < now_ms:
                expired += len(names)
            else:
                taken.append((names, body))
        self._count_expired(expired)
        return taken

    def unwait(self, key: str, channel: str, future: asyncio.Future[bytes]) -> None:
        """Give up a :meth:`wait`: a message that reached it meanwhile is kept, not lost."""
        if future.done():
            if not future.cancelled() and future.exception() is None:
                self._give_back(key, channel, future.result())
            return
        future.cancel()
        self.waiters.remove(key, channel, future)

    def collect(self, key: str, channel: str) -> None:
        """Serve this loop's receivers of ``channel`` from the mailbox (woken by it).

        Those it cannot serve yet keep listening: the mailbox wakes this loop again.
        """
        self.waiters.serve_from(key, channel, self.mailbox.take)

    def resume(self, key: str) -> None:
        """Another loop's pop of ``key`` is put away: our pull loop may pop now."""
        turn = self._turns.get(key)
        if turn is not None and not turn.done():
            turn.set_result(None)

    def _give_back(self, key: str, channel: str, body: bytes) -> None:
        if is_process_local(channel):
            self.mailbox.give_back(key, channel, body, self)
            self.collect(key, channel)  # another receiver here may wait on it
            return
        self.prefetched.give_back(key, channel, body)

    async def _pull(self, key: str, local: bool) -> None:
        busy = False  # the last pop returned messages: pop again without blocking
        served = 0  # receivers served by the last pop; they are likely to come right back
        try:
            while True:
                # After serving receivers from a busy LIST, pop again at once (they are
                # likely to come right back); a shared channel without prefetch waits for
                # them instead, so it never takes more than there are receivers.
                eager = busy and served and (local or self.prefetch > 0)
                if served and not eager:
                    await asyncio.sleep(0)
                wanted = self.waiters.live(key)
                if wanted == 0 and not eager:
                    break
                if local and not self.mailbox.start_pop(key, self):
                    # Another loop pops this LIST now; what it takes for our receivers
                    # reaches them through the mailbox. Pop ourselves once it is done.
                    await self._turn(key)
                    busy, served = False, 0
                    continue
                try:
                    self.unanswered.setdefault(key, time.monotonic())
                    elements = await self._pop(key, local, wanted, busy)
                    self.unanswered.pop(key, None)
                    busy = bool(elements)
                    served = self._dispatch(key, local, elements) if elements else 0
                finally:
                    if local:
                        self.mailbox.end_pop(key, self)
                self._maybe_sweep()
            self.unanswered.pop(key, None)  # nobody waits: nobody asks
        except Exception as exc:
            # Every waiter of this LIST learns why; the next receive() starts a new loop.
            if not isinstance(exc, RedisPermissionError):  # that one is logged once (acl.py)
                logger.warning("receive loop for %s failed: %s", key, exc)
            self.waiters.fail(key, exc)
        finally:
            if local:
                self.mailbox.leave(key, self)
                self.mailbox.unlisten(key, self)
            if self.pullers.get(key) is asyncio.current_task():
                del self.pullers[key]
            if self._holds_any() and self._sweep_handle is None:
                self._sweep_handle = self.loop.call_later(self.expiry_s + 1, self._timed_sweep)

    async def _pop(self, key: str, local: bool, wanted: int, busy: bool) -> list[bytes] | None:
        count = self.batch if local else max(wanted, 1) + self.prefetch
        if not busy:
            block = self.block_timeout(key)
            reply = await self.executor.blocking(
                key, block, self._salvage_reply, "BLMPOP", block, 1, key, "LEFT", "COUNT", count
            )
            return reply[1] if reply else None
        # Rides with the next flush of sends, behind them: one write carries this turn's
        # sends and pops, and the pop sees what they pushed.
        pop = self.sender.pop(key, count, self._salvage)
        try:
            return await pop
        except asyncio.CancelledError:
            # This loop is closing. A reply already in is salvaged here; one still on
            # its way is salvaged by the sender when it comes (settle() waits for it).
            if pop.done() and not pop.cancelled() and pop.exception() is None:
                self._salvage(key, pop.result() or [])
            else:
                await self.sender.settle()
            raise

    async def _turn(self, key: str) -> None:
        turn = self.loop.create_future()
        self._turns[key] = turn
        try:
            await turn
        finally:
            del self._turns[key]

    def _dispatch(self, key: str, local: bool, elements: list[bytes]) -> int:
        """Hand messages to waiting receivers, keep the rest; return how many were served."""
        now_ms = time.time() * 1000
        expired = served = 0
        for element in elements:
            expires, names, body = unpack_element(element)
            if expires < now_ms:
                expired += len(names)
                continue
            for channel in names:
                if self.waiters.serve(key, channel, body):
                    served += 1
                elif local:
                    self.mailbox.put(key, channel, expires, body, self)
                else:
                    self.prefetched.keep(key, channel, expires, body)
        self._count_expired(expired)
        return served

    # What a cancelled pop fetched is salvaged, never dropped.

    def _salvage_reply(self, reply: Any) -> None:
        if reply:
            self._salvage(reply[0], reply[1])

    def _salvage(self, key: Any, elements: list[bytes]) -> None:
        """Keep what a pop took after its pull loop was cancelled (this loop is closing)."""
        key = key.decode() if isinstance(key, bytes) else key
        now_ms = time.time() * 1000
        returned: list[bytes] = []
        for element in elements:
            expires, names, body = unpack_element(element)
            if expires < now_ms:
                self._count_expired(len(names))
            elif is_process_local(names[0]) and key not in self.routed:
                for channel in names:
                    self.mailbox.put(key, channel, expires, body, self)
            else:
                returned.append(element)
        if returned:
            logger.info("returning %d message(s) of %s taken as its loop closed",
                        len(returned), key)
            self.prefetched.push_back(key, returned)

    # Expiry of prefetch buffers and the mailbox

    def _count_expired(self, amount: int) -> None:
        if amount:
            self.expired += amount
            _metrics.expired(amount)

    def _maybe_sweep(self) -> None:
        if time.monotonic() - self._last_sweep >= SWEEP_INTERVAL_S:
            self.sweep()

    def _timed_sweep(self) -> None:
        self._sweep_handle = None
        self.sweep()
        if self._holds_any():
            self._sweep_handle = self.loop.call_later(self.expiry_s + 1, self._timed_sweep)

    def _holds_any(self) -> bool:
        return bool(self.prefetched.buffers) or self.mailbox.holds_any()

    def sweep(self) -> None:
        """Drop expired messages from the buffers and the mailbox, and empty buffers."""
        self._last_sweep = time.monotonic()
        self.mailbox.sweep()
        self.prefetched.sweep()

    async def close(self) -> None:
        """Stop pull loops (salvaging their pops), return prefetched messages, drop waiters."""
        pullers, self.pullers = self.pullers, {}
        for task in pullers.values():
            task.cancel()
        await asyncio.gather(*pullers.values(), return_exceptions=True)
        for key in pullers:  # a pull loop cancelled before it ran has no finally
            self.mailbox.leave(key, self)
            self.mailbox.unlisten(key, self)
        await self.sender.settle()
        await self.prefetched.close()  # returns what nobody here read
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        self.waiters.cancel_all()
