"""The relay between interfaces and workers: one layer, channel and receive loop per process.

Every process owns one process-local channel (``layer.new_channel``); all relay traffic to the
process arrives there, and one task reads it and hands each item to the handler of its kind.
Outgoing items are queued per destination and a single flusher task sends whatever is ready as
one batch per destination per round trip, so order per destination is kept and busy
connections share round trips. Each destination has at most one send in flight, and the others
do not wait for it: a peer whose inbox is on a Redis shard that is down holds up only the items
for that peer.

    relay = Relay(relay_layer(settings), wire.INTERFACE_CHANNELS)
    relay.handle({wire.CLAIM: on_claim, wire.SEND: on_send, ...})
    await relay.start()
    relay.post(owner_channel, [wire.EVENT, conn_id, event])

:class:`~channels_fleet.relay.side.RelaySide` adds what every process runs beside its relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from channels.exceptions import ChannelFull

from ..exceptions import RedisAccessError, RedisPermissionError
from ..layers.backoff import Backoff
from . import wire

logger = logging.getLogger(__name__)

#: ``handler(conn_id, payload, sender)``: sender is the channel of the process that sent the
#: batch ("" if it did not say).
Handler = Callable[[str, Any, str], Awaitable[None]]
#: ``on_undeliverable(dest, items)``: items given up after ``FULL_RETRY_SECONDS`` or an error.
FailHandler = Callable[[str, list[wire.Item]], None]
#: ``trailer(dest)``: one item to append to the batch about to go to ``dest``, or None.
Trailer = Callable[[str], list[Any] | None]

#: Largest batch payload estimate; bigger batches are split across messages.
MAX_BATCH_BYTES = 512 * 1024
#: Most items waiting to be sent by one process (see ``Relay.post``).
MAX_PENDING = 100_000
#: How long a send to a full peer channel is retried before its items are given up.
FULL_RETRY_SECONDS = 2.0
#: Waits between those tries: the peer is reading, so its channel has room again soon.
FULL_RETRY = Backoff(base=0.01, cap=0.25)
#: Waits after a receive failed (the layer gave up after its own retry_timeout, or a bug);
#: jittered: every process's receives fail together when a shard is lost.
RECEIVE_RETRY = Backoff(base=0.5, cap=0.5, jitter=True)


def relay_layer(settings: Any, *, connect_capacity: int | None = None) -> Any:
    """The relay's channel layer: key prefix ``settings.key_prefix`` (``fleet``) on
    ``settings.redis_url`` (cluster or single).

    Each process channel holds at most ``relay_capacity`` batches; the work queue
    ``fleet.connect`` at most ``connect_capacity`` envelopes (ChannelFull beyond: 1013 / 503).
    """
    from channels_fleet.layers import RedisClusterChannelLayer

    capacity = settings.relay_capacity
    return RedisClusterChannelLayer(
        hosts=list(settings.redis_url),
        prefix=settings.key_prefix,
        capacity=capacity,
        channel_capacity={wire.CONNECT_QUEUE: connect_capacity or capacity},
        # A worker takes exactly the envelopes it serves: prefetched ones would die with it
        # (their clients refused at the claim deadline) and skew the spread across workers.
        receive_prefetch=0,
    )


class Relay:
    """This process's end of the relay: batching sender plus the one receive loop."""

    def __init__(
        self, layer: Any, prefix: str, on_undeliverable: FailHandler | None = None
    ) -> None:
        self.layer = layer
        self.prefix = prefix
        self.channel = ""  # known once started
        self._handlers: dict[str, Handler] = {}
        self._on_undeliverable = on_undeliverable
        self._outbox: dict[str, list[wire.Item]] = {}
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending = 0
        self._trailer: Trailer | None = None
        self._sending: dict[str, asyncio.Task[None]] = {}  # destination -> its send in flight

    def set_trailer(self, trailer: Trailer) -> None:
        """Append ``trailer(dest)``'s item (if any) to every batch to ``dest``, after whatever
        was posted before it went out (acknowledgements ride on traffic that goes anyway)."""
        self._trailer = trailer

    def handle(self, handlers: Mapping[str, Handler]) -> None:
        """Take items of these kinds with these handlers (the dispatch table); others are
        logged and dropped."""
        self._handlers.update(handlers)

    async def start(self) -> str:
        self.channel = await self.layer.new_channel(self.prefix)
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name=f"relay-receive {self.channel}"),
            asyncio.create_task(self._flush_loop(), name=f"relay-flush {self.channel}"),
        ]
        return self.channel

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._sending.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []

    def post(self, dest: str, item: wire.Item, *, control: bool = False) -> bool:
        """Queue one item for ``dest``; it goes out with the next batch, in order.

        Returns False (and queues nothing) when ``MAX_PENDING`` items already wait because
        Redis is slower than the traffic: the caller ends that connection rather than buffer
        without bound. ``control`` items (claims, releases, disconnects) are always queued.
        """
        if self._pending >= MAX_PENDING and not control:
            return False
        self._outbox.setdefault(dest, []).append(item)
        self._pending += 1
        self._idle.clear()
        self._ready.set()
        return True

    async def flushed(self, timeout: float) -> bool:
        """Wait until everything posted so far has been handed to the layer."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def send_now(self, channel: str, message: wire.ConnectEnvelope) -> None:
        """Send one message outside the batches (the connect envelope); raises ChannelFull."""
        await self.layer.send(channel, message)

    async def _receive_loop(self) -> None:
        failures = 0
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except (RedisPermissionError, RedisAccessError) as exc:
                # The user's ACL: logged once where Redis refused it (layers/acl.py), not at
                # every retry; retried until the rule is added. A certificate or password
                # changed under a running process: one line, retried until it is mended.
                if isinstance(exc, RedisAccessError) and not failures:
                    logger.error("relay receive on %s: %s; retrying", self.channel, exc)
                failures += 1
                await asyncio.sleep(RECEIVE_RETRY.delay(failures))
                continue
            except Exception:
                logger.exception("relay receive on %s failed; retrying", self.channel)
                failures += 1
                await asyncio.sleep(RECEIVE_RETRY.delay(failures))
                continue
            failures = 0
            try:
                items = wire.parse_batch(message)
            except wire.WireError as exc:
                logger.warning("relay %s ignored a message: %s", self.channel, exc)
                continue
            sender = message.get("from", "")
            for item in items:
                try:
                    kind, conn_id, payload = wire.parse_item(item)
                except wire.WireError as exc:
                    logger.warning("relay %s ignored an item: %s", self.channel, exc)
                    continue
                handler = self._handlers.get(kind)
                if handler is None:
                    logger.warning("relay %s ignored a %s item: not one this side takes",
                                   self.channel, kind)
                    continue
                try:
                    await handler(conn_id, payload, sender)
                except Exception:
                    logger.exception("relay %s failed to handle a %s item", self.channel, kind)

    async def _flush_loop(self) -> None:
        # One round used to await every destination's send before the next: a send to one
        # peer whose shard was down (retried for the layer's retry_timeout, then dropped)
        # held up every other peer's items that long. Now a destination waits only for its
        # own send in flight (which keeps its order); the others go out at once.
        while True:
            await self._ready.wait()
            # One loop turn before the batch is made: an app whose handler just posted its
            # output asks for its next event in that turn, so the ACK of what it handled rides
            # with the output (a crash right after no longer replays a finished message).
            await asyncio.sleep(0)
            self._ready.clear()
            outbox = {dest: items for dest, items in self._outbox.items()
                      if dest not in self._sending}
            for dest, items in outbox.items():
                del self._outbox[dest]
                self._pending -= len(items)
            if self._trailer is not None:
                for dest, items in outbox.items():
                    trailer = self._trailer(dest)
                    if trailer is not None:
                        items.append(trailer)
            for dest, items in outbox.items():
                self._sending[dest] = asyncio.create_task(self._send_one(dest, items),
                                                          name=f"relay-send {dest}")

    async def _send_one(self, dest: str, items: list[wire.Item]) -> None:
        try:
            await self._send_all(dest, items)
        finally:
            del self._sending[dest]
            if dest in self._outbox:
                self._ready.set()  # what came for it meanwhile
            elif not self._outbox and not self._sending:
                self._idle.set()

    async def _send_all(self, dest: str, items: list[wire.Item]) -> None:
        chunk: list[wire.Item] = []
        size = 0
        for item in items:
            n = wire.item_size(item)
            if chunk and size + n > MAX_BATCH_BYTES:
                await self._send_batch(dest, chunk)
                chunk, size = [], 0
            chunk.append(item)
            size += n
        if chunk:
            await self._send_batch(dest, chunk)

    async def _send_batch(self, dest: str, items: list[wire.Item]) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + FULL_RETRY_SECONDS
        failures = 0
        while True:
            try:
                await self.layer.send(dest, wire.batch(items, self.channel))
                return
            except ChannelFull:
                if loop.time() > give_up:
                    reason = "channel full"
                    break
                failures += 1
                await asyncio.sleep(FULL_RETRY.delay(failures))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("relay send to %s failed", dest)
                reason = type(exc).__name__
                break
        logger.warning("relay dropped %d items for %s: %s", len(items), dest, reason)
        if self._on_undeliverable is not None:
            self._on_undeliverable(dest, items)
