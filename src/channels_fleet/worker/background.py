"""Background channels (what ``runworker`` did): the project's ``ChannelNameRouter`` consumers.

``channels-fleet worker APP --channels a,b`` serves the channels ``a`` and ``b`` of the
project's layer beside the relayed connections: one application instance per channel, with
the scope ``{"type": "channel", "channel": name}``, as Channels' ``Worker`` makes it.

Unlike that ``Worker``, a message leaves the layer only when its instance asks for the next
one: it is handed over, not queued. Channels' ``Worker`` received as fast as the layer gave,
into an unbounded queue in memory, so a stopping worker (every rollout) lost what it had
queued, and an instance that raised lost what was put in its queue before it was replaced.
Here a stop cancels the receives (the layer keeps what they had not returned), lets every
instance finish the message it holds, then closes the project's layers, which returns what
they had prefetched to Redis (``close_project_layers``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from asgiref.compatibility import guarantee_single_callable

logger = logging.getLogger(__name__)


class _Instance:
    """One channel's application instance, fed one message at a time."""

    def __init__(self, application: Any, channel: str) -> None:
        self.channel = channel
        self.asked = asyncio.Event()  # it awaits receive(), or it ended
        self._next: asyncio.Future[dict[str, Any]] | None = None
        app = guarantee_single_callable(application)
        self.task = asyncio.ensure_future(
            app(scope={"type": "channel", "channel": channel},
                receive=self._receive, send=self._send))
        self.task.add_done_callback(lambda _: self.asked.set())

    async def _receive(self) -> dict[str, Any]:
        self._next = asyncio.get_running_loop().create_future()
        self.asked.set()
        return await self._next

    async def _send(self, message: dict[str, Any]) -> None:
        raise RuntimeError(
            f"background channel {self.channel!r}: a channel consumer has no client to send "
            f"{message.get('type')!r} to; send to a channel or group through the channel layer")

    @property
    def idle(self) -> bool:
        """It waits for a message (so holds none), or it ended."""
        return self.asked.is_set()

    def give(self, message: dict[str, Any]) -> None:
        assert self._next is not None and not self._next.done()
        self.asked.clear()
        self._next.set_result(message)

    def ended(self) -> bool:
        """It returned or raised (logged); the next message goes to a new instance."""
        if not self.task.done():
            return False
        if not self.task.cancelled() and self.task.exception() is not None:
            exc = self.task.exception()
            logger.error("background channel %s: its consumer raised %r; a new instance takes "
                         "the next message", self.channel, exc, exc_info=exc)
        return True


class BackgroundChannels:
    """The project's consumers of ``channels``, on ``layer`` (the project's default layer)."""

    def __init__(self, application: Any, channels: Sequence[str], layer: Any) -> None:
        if layer is None:
            raise ValueError("background channels need a channel layer: CHANNEL_LAYERS has no "
                             "'default'")
        self.application = application
        self.channels = list(channels)
        self.layer = layer
        self._instances: dict[str, _Instance] = {}
        self._listeners: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Serve until :meth:`stop` (or cancelled)."""
        logger.info("serving background channels %s", ", ".join(self.channels))
        listeners = self._listeners = [asyncio.ensure_future(self._listen(c))
                                       for c in self.channels]
        try:
            await asyncio.wait(listeners)  # until stop() cancels them
        except asyncio.CancelledError:
            await self.stop(0)  # cancelled without a drain first (Host.stop)
            raise
        for listener in listeners:
            if not listener.cancelled() and listener.exception() is not None:
                logger.error("background channels %s stopped: %r", ", ".join(self.channels),
                             listener.exception())

    async def _listen(self, channel: str) -> None:
        instance: _Instance | None = None
        while True:
            if instance is None:
                instance = self._instances[channel] = _Instance(self.application, channel)
            await instance.asked.wait()
            if instance.ended():
                instance = None
                continue
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis unreachable, or refused: the receive itself took nothing.
                logger.warning("background channel %s: receive failed (%r); retrying in 1 s",
                               channel, exc)
                await asyncio.sleep(1)
                continue
            if not isinstance(message, dict) or not message.get("type"):
                logger.error("background channel %s: dropped a message without a 'type' "
                             "(nothing can handle it): %.200r", channel, message)
                continue
            instance.give(message)

    async def stop(self, grace: float) -> None:
        """Receive no more; let every instance finish the message it holds (up to ``grace``
        seconds), then cancel them."""
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.cancel()  # it awaits asked or receive(): neither holds a message
        await asyncio.gather(*listeners, return_exceptions=True)
        instances = list(self._instances.values())
        finishing = [asyncio.ensure_future(i.asked.wait()) for i in instances if not i.idle]
        if finishing:
            await asyncio.wait(finishing, timeout=grace)
            for wait in finishing:
                wait.cancel()
        for instance in instances:
            if not instance.idle:
                logger.warning("background channel %s: its consumer did not finish its "
                               "message in time; cancelled", instance.channel)
            instance.task.cancel()
        await asyncio.gather(*(i.task for i in instances), return_exceptions=True)
        self._instances.clear()


async def close_project_layers() -> None:
    """Close the project's channel layers as the worker exits: a receive still waiting in Redis
    gives back what it took, and messages prefetched for receivers that will not come back go
    back to Redis (ours and channels_redis have ``close_pools``)."""
    from channels.layers import channel_layers

    for alias, layer in list(channel_layers.backends.items()):
        close = getattr(layer, "close_pools", None)
        if close is None:
            continue
        try:
            await close()
        except Exception as exc:
            logger.warning("channel layer %r did not close cleanly: %r", alias, exc)
