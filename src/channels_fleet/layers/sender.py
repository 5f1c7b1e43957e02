"""Coalesces concurrent sends into one pipeline per round trip (auto-pipelining).

``submit`` queues an element for a channel LIST and returns a future. When no flush is in
flight, one starts at the end of the current event-loop turn; while one is in flight, new
sends wait and all leave together in the next flush. The receivers' non-blocking pops
(``pop``) ride in the same flushes, behind the sends.

A flush sends one ``EVALSHA send`` per distinct LIST (carrying all its elements, in
order) as one pipeline per node, and resolves each future with True (pushed) or False (the
LIST was full). Only one flush is in flight at a time, and failed commands are retried
(executor.py) before the next flush starts, so the order of sends to one LIST is kept even
through MOVED or a failover.

The common path runs in plain callbacks on the already open connections: no task per flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from redis import exceptions as rx

from .connection import NodeClient
from .executor import Executor, Op
from .scripts import MAX_ELEMENTS_PER_CALL, SEND

logger = logging.getLogger(__name__)


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


Call = tuple[Op, list[Item] | Pop]


class Sender:
    """Per event loop: the pending queue and the one flush in flight."""

    def __init__(self, executor: Executor, expiry_ms: int) -> None:
        self.executor = executor
        self.expiry_ms = expiry_ms
        self.pending: list[Item] = []
        self.pops: list[Pop] = []
        self.in_flight = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def submit(self, key: str, element: bytes, capacity: int) -> asyncio.Future[bool]:
        """Queue one element; the future says whether it was pushed (False = channel full)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append(Item(key, element, capacity, future))
        self._schedule()
        return future

    def pop(self, key: str, count: int) -> asyncio.Future[list[bytes] | None]:
        """Queue ``LPOP key count`` behind this flush's sends (so it sees what they pushed)."""
        future: asyncio.Future[list[bytes] | None] = asyncio.get_running_loop().create_future()
        self.pops.append(Pop(key, count, future))
        self._schedule()
        return future

    def _schedule(self) -> None:
        # Start a flush at the end of this event-loop turn, so that everything queued in
        # the turn (sends of many tasks, the pops that follow them) leaves in one write.
        if not self.in_flight:
            self.in_flight = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        if self._closed:
            return
        batch, self.pending = self.pending, []
        pops, self.pops = self.pops, []
        self.in_flight = True
        calls = self._calls(batch)
        calls.extend((Op(pop.key, ("LPOP", pop.key, pop.count)), pop) for pop in pops)
        groups: dict[NodeClient, list[Call]] = {}
        for call in calls:
            groups.setdefault(self.executor.router.node_for(call[0].key), []).append(call)
        connections = [node.live_connection() for node in groups]
        if any(conn is None for conn in connections):
            self._run_slow(calls)  # connect first (or fail) in a task
            return
        remaining = len(groups)

        def node_done(_: object) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                self._finish(calls)

        for conn, group in zip(connections, groups.values(), strict=True):
            futures = conn.pipeline([op.args for op, _ in group])  # type: ignore[union-attr]
            for (op, _), future in zip(group, futures, strict=True):
                op.result = future
            # Replies arrive in order: when the last is in, the whole group is.
            futures[-1].add_done_callback(node_done)

    def _calls(self, batch: list[Item]) -> list[Call]:
        by_key: dict[str, list[Item]] = {}
        for item in batch:
            by_key.setdefault(item.key, []).append(item)
        now_ms = int(time.time() * 1000)
        calls: list[Call] = []
        for key, items in by_key.items():
            capacity = items[0].capacity
            for start in range(0, len(items), MAX_ELEMENTS_PER_CALL):
                chunk = items[start : start + MAX_ELEMENTS_PER_CALL]
                args = ("EVALSHA", SEND.sha, 1, key, capacity, self.expiry_ms, now_ms,
                        *(item.element for item in chunk))
                calls.append((Op(key, args), chunk))
        return calls

    def _finish(self, calls: list[Call]) -> None:
        failed: list[Call] = []
        for op, chunk in calls:
            future: asyncio.Future[int] = op.result
            if future.cancelled():
                op.result, op.error = None, rx.ConnectionError("flush cancelled")
                failed.append((op, chunk))
            elif future.exception() is not None:
                op.result, op.error = None, future.exception()
                failed.append((op, chunk))
            else:
                op.result = future.result()
                self._resolve(op, chunk)
        if failed:
            self._run_slow(failed)
        else:
            self._next()

    def _run_slow(self, calls: list[Call]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._slow(calls))

    async def _slow(self, calls: list[Call]) -> None:
        """Connect, follow MOVED/ASK, load scripts, wait out failovers: executor.run."""
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
            self._task = None
            self._next()

    def _next(self) -> None:
        self.in_flight = False
        if (self.pending or self.pops) and not self._closed:
            # Queued during the flush. Start the next one at the end of this turn, so the
            # tasks this flush just woke (a producer's next send) join it.
            self._schedule()

    @staticmethod
    def _resolve(op: Op, chunk: list[Item] | Pop) -> None:
        if isinstance(chunk, Pop):
            if not chunk.future.done():
                if op.error is not None:
                    chunk.future.set_exception(op.error)
                else:
                    chunk.future.set_result(op.result)
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

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for item in [*self.pending, *self.pops]:
            if not item.future.done():
                item.future.cancel()
        self.pending, self.pops = [], []
