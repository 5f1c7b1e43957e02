"""The consumers' homed channels of one interface: popped here, relayed with the client's frames.

A WebSocket's consumer gets a channel name of this interface (``specific.fleet<token>!<conn
id>``, layers/homing.py), offered in every connect envelope of the connection: the same on each
worker the socket moves to. The owner whose app took it sends INBOX with its layer's key prefix;
from then on every message sent to the name is popped from this interface's LIST on that layer
(one LIST per prefix for all its connections, read by the layer's own receive machinery) and
given to ``deliver`` as one ``fleet.message`` event, its body left as the sender serialised it
(encrypted, if the layer encrypts). The gateway relays it as it relays a client frame: held
while the socket has no owner, acknowledged, replayed after a crash.

    inboxes = Inboxes(settings, tasks, deliver=gateway_to_owner)
    inboxes.start(relay_channel)
    conn.channel = inboxes.name(conn.id)       # into its envelopes
    inboxes.watch(conn, "chat")                # the owner's INBOX
    inboxes.unwatch(conn)                      # the connection is over
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from ..layers.keys import channel_key
from ..relay import wire
from ..relay.relay import RECEIVE_RETRY
from ..relay.side import TaskSet
from .client import ClientConn, ClientEvent
from .settings import InterfaceSettings

logger = logging.getLogger(__name__)

#: Most layer key prefixes an interface reads homed channels on (a project has one per alias).
MAX_PREFIXES = 8


class _Watch:
    """One connection's homed channel being popped on one layer."""

    __slots__ = ("conn", "prefix", "layer", "key", "future", "failures")

    def __init__(self, conn: ClientConn, prefix: str, layer: Any, key: str) -> None:
        self.conn = conn
        self.prefix = prefix
        self.layer = layer
        self.key = key
        self.future: asyncio.Future[bytes] | None = None
        self.failures = 0


class Inboxes:
    """Homed channels of one gateway's connections; one per gateway."""

    def __init__(self, settings: InterfaceSettings, tasks: TaskSet,
                 deliver: Callable[[ClientConn, ClientEvent], None]) -> None:
        self.settings = settings
        self.tasks = tasks
        self.deliver = deliver
        self.token = ""
        self._layers: dict[str, Any] = {}  # key prefix -> a layer on the relay's Redis
        self._watches: dict[str, _Watch] = {}  # connection id -> its watch

    def start(self, relay_channel: str) -> None:
        """Names are made from this process's relay channel: unique to it."""
        self.token = "fleet" + relay_channel.rsplit("!", 1)[-1]

    def name(self, conn_id: str) -> str:
        """The homed channel name of connection ``conn_id``."""
        return f"specific.{self.token}!{conn_id}"

    def watch(self, conn: ClientConn, prefix: str) -> None:
        """Pop ``conn``'s homed channel on the layer with key prefix ``prefix`` (an INBOX)."""
        watch = self._watches.get(conn.id)
        if conn.channel is None or conn.finished or (watch is not None and watch.prefix == prefix):
            return
        layer = self._layer(prefix)
        if layer is None:
            return
        self.unwatch(conn)  # a new owner on another prefix (the project's settings changed)
        watch = self._watches[conn.id] = _Watch(conn, prefix, layer,
                                                channel_key(prefix, conn.channel))
        self._arm(watch)

    def unwatch(self, conn: ClientConn) -> None:
        """The connection is over: stop popping its channel (what comes later expires)."""
        watch = self._watches.pop(conn.id, None)
        if watch is not None and watch.future is not None:
            watch.layer.cancel_receive(conn.channel, watch.key, watch.future)

    async def close(self) -> None:
        for conn in [w.conn for w in self._watches.values()]:
            self.unwatch(conn)
        for layer in self._layers.values():
            await layer.close_pools()

    def _layer(self, prefix: str) -> Any:
        layer = self._layers.get(prefix)
        if layer is not None:
            return layer
        if not prefix or len(prefix) > 200 or "{" in prefix or "}" in prefix:
            logger.warning("ignored an INBOX with a bad key prefix %r", prefix[:64])
            return None
        if len(self._layers) >= MAX_PREFIXES:
            logger.warning("ignored an INBOX for key prefix %r: already reading %d prefixes",
                           prefix, MAX_PREFIXES)
            return None
        from channels_fleet.layers import RedisClusterChannelLayer

        # Its mailbox holds a channel's messages between two pops' deliveries: room for
        # what the gateway would hold for a socket anyway.
        layer = self._layers[prefix] = RedisClusterChannelLayer(
            hosts=list(self.settings.redis_url), prefix=prefix,
            capacity=self.settings.replay_limit)
        return layer

    def _current(self, watch: _Watch) -> bool:
        return self._watches.get(watch.conn.id) is watch

    def _arm(self, watch: _Watch) -> None:
        """Wait for the next message (a future, no task: one per socket)."""
        assert watch.conn.channel is not None
        future = watch.layer.receive_future(watch.conn.channel, watch.key)
        if future is None:  # this layer's first receive on the loop: connect it first
            watch.future = None
            self.tasks.spawn(self._connect(watch), f"inbox {watch.prefix}")
            return
        watch.future = future
        future.add_done_callback(partial(self._arrived, watch))

    async def _connect(self, watch: _Watch) -> None:
        while self._current(watch):
            try:
                await watch.layer.connect()
            except Exception as exc:
                watch.failures += 1
                logger.warning("homed channels on %r: cannot connect (%r); retrying",
                               watch.prefix, exc)
                await asyncio.sleep(RECEIVE_RETRY.delay(watch.failures))
                continue
            self._arm(watch)
            return

    def _arrived(self, watch: _Watch, future: asyncio.Future[bytes]) -> None:
        if future.cancelled() or not self._current(watch):
            return
        exc = future.exception()
        if exc is not None:
            # The layer's receive loop failed (the shard away past its retry): the message
            # is still in Redis; wait, then pop again.
            watch.failures += 1
            logger.warning("%s: receive of its channel failed (%r); retrying", watch.conn.id, exc)
            asyncio.get_running_loop().call_later(
                RECEIVE_RETRY.delay(watch.failures), self._rearm, watch)
            return
        watch.failures = 0
        self.deliver(watch.conn, {"type": wire.CHANNEL_MESSAGE, "body": future.result()})
        self._arm(watch)

    def _rearm(self, watch: _Watch) -> None:
        if self._current(watch):
            self._arm(watch)
