"""Coalesces concurrent sends into one pipeline per round trip (auto-pipelining).

``submit`` queues an element for a channel LIST and returns a future. When no flush is in
flight, one starts at the end of the current event-loop turn; while one is in flight, new
sends wait and all leave together in the next flush. The receivers' non-blocking pops
(``pop``) ride in the same flushes, behind the sends.

A flush sends one ``EVALSHA send`` per distinct LIST (carrying all its elements, in
order) as one pipeline per node, and resolves each future with True (pushed) or False (the
LIST was full). One flush is in flight per node at a time. Failed commands are retried
(executor.py) while what comes for their LISTs meanwhile is held back, and queued behind
them once they are done, so the order of sends to one LIST is kept even through MOVED or a
failover; other LISTs go on (one shard down must not stop the sends to the others).

A pop whose receiver gave up (its event loop is closing) still gets its reply: what it took
goes to the pop's ``salvage`` callback instead of being dropped. ``settle()`` waits for the
flushes in flight, so that a closing loop sees those replies before its connections close.

The common path runs in plain callbacks on the already open connections: no task per flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from redis import exceptions as rx

from .executor import Executor, Op
from .node import NodeClient
from .scripts import MAX_ELEMENTS_PER_CALL, SEND

logger = logging.getLogger(__name__)

SETTLE_TIMEOUT_S = 1.0  # how long a closing loop waits for the replies in flight


@dataclass(eq=False, slots=True)
class Item:
    key: str
    element: bytes
    capacity: int
    future: asyncio.Future[bool]


@dataclass(eq=False, slots=True)
class Pop:
    key: str
    count: int
    future: asyncio.Future[list[bytes] | None]
    salvage: Callable[[str, list[bytes]], None]


Call = tuple[Op, list[Item] | Pop]


class _Queue:
    """What waits for one node's next flush, and whether one is in flight to it."""

    __slots__ = ("node", "pending", "pops", "in_flight", "last_reply")

    def __init__(self, node: NodeClient) -> None:
        self.node = node
        self.pending: list[Item] = []
        self.pops: list[Pop] = []
        self.in_flight = False
        self.last_reply: asyncio.Future[Any] | None = None  # of the flush in flight


class Sender:
    """Per event loop: one queue per node, at most one flush in flight to each node.

    Nodes flush independently (a slow node does not hold the others back). While a failed
    call is retried (MOVED, failover, a node down), later sends and pops of its LIST are
    held back (``_held``), so that none can overtake the retried one on its (possibly new)
    node; the other LISTs are not held: before, every node waited, and one dead shard
    stalled every send of the process for ``retry_timeout`` at a time.
    """

    def __init__(self, executor: Executor, expiry_ms: int) -> None:
        self.executor = executor
        self.expiry_ms = expiry_ms
        self.queues: dict[NodeClient, _Queue] = {}
        self._task: asyncio.Task[None] | None = None
        self._slow_calls: list[Call] = []
        #: LISTs whose failed calls are being retried: what came for each since, in order.
        self._held: dict[str, list[Item | Pop]] = {}
        self._closed = False

    def _queue(self, key: str) -> _Queue:
        node = self.executor.router.node_for(key)
        queue = self.queues.get(node)
        if queue is None:
            queue = self.queues[node] = _Queue(node)
        return queue

    def submit(self, key: str, element: bytes, capacity: int) -> asyncio.Future[bool]:
        """Queue one element; the future says whether it was pushed (False = channel full)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._enqueue(Item(key, element, capacity, future))
        return future

    def pop(
        self, key: str, count: int, salvage: Callable[[str, list[bytes]], None]
    ) -> asyncio.Future[list[bytes] | None]:
        """Queue ``LPOP key count`` behind this flush's sends (so it sees what they pushed).

        If the future is cancelled once the LPOP has left, its elements go to ``salvage``.
        """
        future: asyncio.Future[list[bytes] | None] = asyncio.get_running_loop().create_future()
        self._enqueue(Pop(key, count, future, salvage))
        return future

    def _enqueue(self, op: Item | Pop) -> None:
        held = self._held.get(op.key)
        if held is not None:  # behind a retried send of the same key: keep their order
            held.append(op)
            return
        queue = self._queue(op.key)
        if isinstance(op, Pop):
            queue.pops.append(op)
        else:
            queue.pending.append(op)
        self._schedule(queue)

    def _schedule(self, queue: _Queue) -> None:
        # Start a flush at the end of this event-loop turn, so that everything queued in
        # the turn (sends of many tasks, the pops that follow them) leaves in one write.
        if not queue.in_flight and not self._closed:
            queue.in_flight = True
            asyncio.get_running_loop().call_soon(self._start, queue)

    def _start(self, queue: _Queue) -> None:
        if self._closed:
            queue.in_flight = False
            return
        batch, queue.pending = queue.pending, []
        pops = [pop for pop in queue.pops if not pop.future.cancelled()]
        queue.pops = []
        if not batch and not pops:
            queue.in_flight = False
            return
        calls = self._calls(batch)
        calls.extend((Op(pop.key, ("LPOP", pop.key, pop.count)), pop) for pop in pops)
        conn = queue.node.live_connection()
        if conn is None:
            queue.in_flight = False
            self._run_slow(calls)  # connect first (or fail) in a task
            return
        replies = conn.batch([op.args for op, _ in calls])
        replies.add_done_callback(lambda _: self._finish(queue, calls, replies))
        queue.last_reply = replies

    def _calls(self, batch: list[Item]) -> list[Call]:
        by_key: dict[str, list[Item]] = {}
        for item in batch:
            by_key.setdefault(item.key, []).append(item)
        now_ms = int(time.time() * 1000)
        calls: list[Call] = []
        for key, items in by_key.items():
            # One call per run of items with the same room: a process's inbox takes direct
            # sends and group elements, whose capacities differ (core.group_send).
            for capacity, same in groupby(items, key=lambda item: item.capacity):
                run = list(same)
                for start in range(0, len(run), MAX_ELEMENTS_PER_CALL):
                    chunk = run[start : start + MAX_ELEMENTS_PER_CALL]
                    args = ("EVALSHA", SEND.sha, 1, key, capacity, self.expiry_ms, now_ms,
                            *(item.element for item in chunk))
                    calls.append((Op(key, args), chunk))
        return calls

    def _finish(self, queue: _Queue, calls: list[Call],
                replies: asyncio.Future[list[Any]]) -> None:
        failed: list[Call] = []
        if replies.cancelled():
            # One exception each, as before: a shared one would gather every raiser's traceback.
            results: list[Any] = [rx.ConnectionError("flush cancelled") for _ in calls]
        else:
            results = replies.result()
        for (op, chunk), result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                op.result, op.error = None, result
                failed.append((op, chunk))
            else:
                op.result = result
                self._resolve(op, chunk)
        queue.in_flight = False
        if failed:
            self._run_slow(failed)
        if queue.pending or queue.pops:
            # Queued during the flush. Start the next one at the end of this turn, so the
            # tasks this flush just woke (a producer's next send) join it.
            self._schedule(queue)

    def _run_slow(self, calls: list[Call]) -> None:
        if self._closed:  # close_pools() aborted the connections under this flush
            for _, chunk in calls:
                for item in [chunk] if isinstance(chunk, Pop) else chunk:
                    item.future.cancel()
            return
        self._slow_calls.extend(calls)
        for op, _ in calls:
            if op.key not in self._held:
                self._hold(op.key)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._slow())

    async def _slow(self) -> None:
        """Connect, follow MOVED/ASK, load scripts, wait out failovers: executor.run."""
        try:
            while self._slow_calls:
                calls, self._slow_calls = self._slow_calls, []
                for op, _ in calls:
                    op.result = op.error = None
                try:
                    await self.executor.run([op for op, _ in calls])
                except BaseException as exc:
                    for _, chunk in calls:
                        for item in [chunk] if isinstance(chunk, Pop) else chunk:
                            if not item.future.done():
                                item.future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for op, chunk in calls:
                        self._resolve(op, chunk)
                finally:
                    retried = {op.key for op, _ in self._slow_calls}
                    for key in {op.key for op, _ in calls} - retried:
                        self._release(key)
        finally:
            self._task = None
            for key in list(self._held):
                self._release(key)
            for queue in self.queues.values():
                if not queue.in_flight and (queue.pending or queue.pops):
                    self._schedule(queue)

    def _hold(self, key: str) -> None:
        """Hold back what comes for ``key`` from now on, and what waits for it already (it
        was sent after the call being retried)."""
        held: list[Item | Pop] = []
        for queue in self.queues.values():
            if any(item.key == key for item in queue.pending):
                held += [item for item in queue.pending if item.key == key]
                queue.pending = [item for item in queue.pending if item.key != key]
            if any(pop.key == key for pop in queue.pops):
                held += [pop for pop in queue.pops if pop.key == key]
                queue.pops = [pop for pop in queue.pops if pop.key != key]
        self._held[key] = held

    def _release(self, key: str) -> None:
        """``key``'s retried calls are done: queue what was held for it, on its node now."""
        held = self._held.pop(key, [])
        if not held or self._closed:
            for entry in held:
                entry.future.cancel()
            return
        queue = self._queue(key)
        queue.pending += [entry for entry in held if isinstance(entry, Item)]
        queue.pops += [entry for entry in held if isinstance(entry, Pop)]
        self._schedule(queue)

    @staticmethod
    def _resolve(op: Op, chunk: list[Item] | Pop) -> None:
        if isinstance(chunk, Pop):
            if not chunk.future.done():
                if op.error is not None:
                    chunk.future.set_exception(op.error)
                else:
                    chunk.future.set_result(op.result)
            elif op.error is None and op.result:  # its receiver gave up: keep what it took
                chunk.salvage(chunk.key, op.result)
            return
        if op.error is not None:
            for item in chunk:
                if not item.future.done():
                    item.future.set_exception(op.error)
            return
        pushed = int(op.result)
        for index, item in enumerate(chunk):
            if not item.future.done():
                item.future.set_result(index < pushed)

    async def settle(self) -> None:
        """Wait (bounded) for the flushes in flight, so their replies are not dropped."""
        in_flight: list[asyncio.Future[Any]] = [
            queue.last_reply for queue in self.queues.values()
            if queue.in_flight and queue.last_reply is not None and not queue.last_reply.done()
        ]
        if self._task is not None:  # connecting, or retrying (MOVED, failover)
            in_flight.append(self._task)
        if in_flight:
            # Done callbacks run in order: each flush's _finish (and salvage) before this wakes.
            await asyncio.wait(in_flight, timeout=SETTLE_TIMEOUT_S)

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for queue in self.queues.values():
            for item in queue.pending:
                if not item.future.done():
                    item.future.cancel()
            for pop in queue.pops:
                if not pop.future.done():
                    pop.future.cancel()
            queue.pending, queue.pops = [], []
        for held in self._held.values():
            for entry in held:
                if not entry.future.done():
                    entry.future.cancel()
        self._held.clear()
