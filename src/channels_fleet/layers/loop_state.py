"""One event loop's share of the layer: its connections, sender and receiver.

Any event loop may use the layer (``async_to_sync`` runs each call on a new one), and asyncio
connections belong to the loop that opened them; so the layer keeps one ``LoopState`` per loop,
started (connected) on the loop's first call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..exceptions import LayerUnavailable
from .connection import Router
from .executor import RETRY, Executor
from .mailbox import Mailbox
from .receiver import Receiver
from .sender import Sender


class LoopState:
    """Connections, sender and receiver bound to one event loop."""

    def __init__(self, hosts: list[tuple[str, dict[str, Any]]], mailbox: Mailbox, *,
                 retry_timeout: float, expiry: float, receive_batch: int,
                 receive_prefetch: int) -> None:
        self.router = Router(hosts)
        self.executor = Executor(self.router, retry_timeout)
        self.sender = Sender(self.executor, int(expiry * 1000))
        self.receiver = Receiver(
            self.executor, self.sender, mailbox, receive_batch,
            receive_prefetch, self.router.block_timeout, expiry,
        )
        self.retry_timeout = retry_timeout
        self.ready = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self.ready:
                return
            deadline = time.monotonic() + self.retry_timeout
            failures = 0
            while True:
                try:
                    await self.router.connect()
                    break
                except LayerUnavailable as exc:
                    failures += 1
                    wait = RETRY.delay(failures)
                    if time.monotonic() + wait > deadline:
                        raise LayerUnavailable(
                            f"{exc} (gave up after retry_timeout={self.retry_timeout:g}s; "
                            "check CHANNEL_LAYERS CONFIG 'hosts')"
                        ) from None
                    await asyncio.sleep(wait)
            self.ready = True

    async def close(self) -> None:
        await self.receiver.close()
        await self.sender.close()
        await self.router.close()
        self.ready = False
