"""One side of the relay as an interface or a worker runs it: relay, liveness, tasks, readiness.

Both sides run the same things beside their connections: a :class:`~.relay.Relay` on their own
process channel with a handler per item kind, a heartbeat and a watch on the peers they relay
with (:mod:`.liveness`), the tasks they start on the side (ending a connection, sending an
envelope), and a readiness answer. They differ only in the arguments:

    side = RelaySide(layer, wire.WORKER_CHANNELS, settings, on_undeliverable=abandon,
                     peers=interfaces, on_dead=interfaces_dead, on_lost=abandon_all)
    side.handle({wire.EVENT: on_event, wire.GONE: on_gone, wire.FENCE: on_fence})
    channel = await side.start()
    side.tasks.spawn(send_envelope(conn), "re-home 12")
    ...
    side.draining = True              # readiness turns false
    await side.tasks.wait(timeout)    # every task started above has finished (or is cancelled)
    await side.stop()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from . import wire
from .liveness import Liveness, OnDead, Peers, RedisLiveness
from .relay import FailHandler, Handler, Relay

logger = logging.getLogger(__name__)


class TaskSet:
    """Tasks started beside the connections: kept until done, failures logged, awaited at drain.

    asyncio keeps only weak references to tasks; a task nobody holds may be collected while it
    runs, and one nobody awaits dies unnoticed at exit. (uvicorn keeps its tasks the same way.)
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in a task of its own, kept here until it is done."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed: %r", task.get_name(), task.exception())

    async def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` for every task (and the ones they start); cancel the rest.

        Returns how many had to be cancelled.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - loop.time())
        left = await self.cancel()
        if left:
            logger.warning("%d task(s) still running at the deadline: cancelled", left)
        return left

    async def cancel(self) -> int:
        """Cancel what is still running and wait for it to end; returns how many."""
        left = list(self._tasks)
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
        return len(left)


class RelaySide:
    """The relay, liveness, tasks and readiness of one interface or worker process.

    :meth:`handle` maps each item kind this side takes (``wire.CLAIM``, ``wire.EVENT`` ...) to
    ``handler(conn_id, payload, sender)``. ``peers()`` names the processes whose death matters
    (``on_dead`` gets those that died); ``on_lost`` runs when this process itself was declared
    dead. ``liveness`` defaults to heartbeats on the relay's Redis.
    """

    def __init__(
        self,
        layer: Any,
        channel_prefix: str,
        settings: Any,
        *,
        on_undeliverable: FailHandler,
        peers: Peers,
        on_dead: OnDead,
        on_lost: Callable[[], None],
        liveness: Liveness | None = None,
    ) -> None:
        self.layer = layer
        self.relay = Relay(layer, channel_prefix, on_undeliverable)
        self.liveness: Liveness = liveness if liveness is not None else RedisLiveness(settings)
        self.tasks = TaskSet()
        #: True once a drain began: readiness is false from then on.
        self.draining = False
        self._peers = peers
        self._on_dead = on_dead
        self._on_lost = on_lost

    def handle(self, handlers: Mapping[str, Handler]) -> None:
        """The dispatch table: ``{wire kind: handler(conn_id, payload, sender)}``."""
        self.relay.handle(handlers)

    @property
    def channel(self) -> str:
        """This process's relay channel (known once started)."""
        return self.relay.channel

    async def start(self) -> str:
        """Start relaying, beating and watching; returns this process's channel."""
        channel = await self.relay.start()
        await self.liveness.start(channel, self._peers, self._on_dead, self._on_lost)
        return channel

    async def stop(self) -> None:
        """Stop watching and beating (peers then see this process gone), then relaying."""
        await self.tasks.cancel()
        await self.liveness.stop()
        await self.relay.stop()

    def ready(self) -> tuple[bool, str]:
        """Readiness: not draining, and this process's own inbox answers.

        Not the heartbeat: every process's heartbeat shares one slot (``{hb}``), so while its
        shard fails over or is out, every process would turn unready at once, the fleet out of
        its Service for want of a key that serving does not need. A process that cannot reach
        its inbox cannot serve: unready once its receive has waited for Redis longer than the
        layer's ``retry_timeout`` (a failover within that is waited out, messages kept).
        """
        if self.draining:
            return False, "draining"
        if not self.channel:
            return False, "starting"
        # In-memory layers (tests) have no Redis to wait for.
        stalled = getattr(self.layer, "receive_stalled", None)
        waited = stalled(self.channel) if stalled is not None else 0.0
        if waited > getattr(self.layer, "retry_timeout", 10.0):
            return False, f"own inbox unreachable for {waited:.0f}s (its Redis shard down?)"
        if not self.liveness.fresh:
            # Peers cannot judge us meanwhile, nor we them (peer_watch.py waits that out).
            return True, "ok; heartbeat stale (the shard of {hb} unreachable?)"
        return True, "ok"

    async def send_now(self, channel: str, message: wire.ConnectEnvelope) -> None:
        """Send one message outside the batches (a connect envelope); raises ChannelFull."""
        await self.relay.send_now(channel, message)

    async def flushed(self, timeout: float) -> bool:
        """Wait until everything posted so far has been handed to the layer."""
        return await self.relay.flushed(timeout)
