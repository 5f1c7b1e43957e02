"""Coalesces concurrent sends into one pipeline per round trip (auto-pipelining).

``submit`` queues an element for a channel LIST and returns a future; a single flusher task
takes everything queued, sends one ``EVALSHA send`` per distinct LIST (carrying all its
elements, in order) in one pipeline per node, and resolves each future with True (pushed) or
False (the LIST was full). While a flush is in flight, new sends wait for the next one, so
busy producers share round trips and the order of sends to one LIST is kept.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .executor import Executor, Op
from .scripts import MAX_ELEMENTS_PER_CALL, SEND


@dataclass(eq=False, slots=True)
class Item:
    key: str
    element: bytes
    capacity: int
    future: asyncio.Future[bool]


class Sender:
    """Per event loop: the pending queue and its flusher task."""

    def __init__(self, executor: Executor, expiry_ms: int) -> None:
        self.executor = executor
        self.expiry_ms = expiry_ms
        self.pending: list[Item] = []
        self.task: asyncio.Task[None] | None = None

    def submit(self, key: str, element: bytes, capacity: int) -> asyncio.Future[bool]:
        """Queue one element; the future says whether it was pushed (False = channel full)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append(Item(key, element, capacity, future))
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._flush_loop())
        return future

    async def _flush_loop(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                await self._flush(batch)
        finally:
            self.task = None

    async def _flush(self, batch: list[Item]) -> None:
        by_key: dict[str, list[Item]] = {}
        for item in batch:
            by_key.setdefault(item.key, []).append(item)
        now_ms = int(time.time() * 1000)
        calls: list[tuple[Op, list[Item]]] = []
        for key, items in by_key.items():
            capacity = items[0].capacity
            for start in range(0, len(items), MAX_ELEMENTS_PER_CALL):
                chunk = items[start : start + MAX_ELEMENTS_PER_CALL]
                args = ("EVALSHA", SEND.sha, 1, key, capacity, self.expiry_ms, now_ms,
                        *(item.element for item in chunk))
                calls.append((Op(key, args), chunk))
        try:
            await self.executor.run([op for op, _ in calls])
        except BaseException as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for op, chunk in calls:
            if op.error is not None:
                for item in chunk:
                    if not item.future.done():
                        item.future.set_exception(op.error)
                continue
            pushed = int(op.result)
            for index, item in enumerate(chunk):
                if not item.future.done():
                    item.future.set_result(index < pushed)

    async def close(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for item in self.pending:
            if not item.future.done():
                item.future.cancel()
        self.pending = []
