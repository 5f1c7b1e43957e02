"""The consumers' channels homed on one interface: popped here, relayed with the client's frames.

A WebSocket's consumer gets a channel name of this interface (``specific.fleet<token>!<conn
id>``, layers/homing.py), offered in every connect envelope of the connection: the same on each
worker the socket moves to. All of them share one LIST per layer key prefix. The first owner
whose app takes a name on a prefix says so with INBOX; from then on one task pops that LIST
(``receive_all``, batches of the layer's ``receive_batch``) and hands each message to
``deliver([connection id, ...], body)`` (a group message names all its members here), the body
left as the sender serialised it (encrypted, if the layer encrypts). The gateway relays it as a
``fleet.message`` event, as it relays a client frame: held while the socket has no owner,
acknowledged, replayed after a crash. A message for a connection that is over is dropped, as
Channels drops one for a consumer that has gone.

    inboxes = Inboxes(settings, deliver=gateway_deliver)
    inboxes.start(relay_channel)
    conn.channel = inboxes.name(conn.id)       # into its envelopes
    inboxes.pull("chat")                       # an owner's INBOX
    await inboxes.discard(conn.id, conn.kept)  # the socket is over (see KEPT in wire.py)
    await inboxes.stop_pulling()               # a drain's end: the rest stays in the LISTs
    await inboxes.close()

A draining interface stops popping before it exits (:meth:`Inboxes.stop_pulling`): what its
sessions' channels are sent from then on stays in the LIST, for the worker that adopts a gone
home's LIST, rather than being popped by a process about to exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..exceptions import RedisPermissionError
from ..layers.keys import HOMED_PREFIX
from ..observability.metrics import METRICS
from ..relay.relay import RECEIVE_RETRY
from .settings import InterfaceSettings

logger = logging.getLogger(__name__)

#: Most layer key prefixes an interface pops homed channels on (a project has one per alias).
MAX_PREFIXES = 8


class Inboxes:
    """The homed channels of one gateway's connections, one pulling task per key prefix."""

    def __init__(self, settings: InterfaceSettings,
                 deliver: Callable[[list[str], bytes], None]) -> None:
        self.settings = settings
        self.deliver = deliver
        self.inbox = ""  # the LIST's name part shared by every homed name: specific.fleet<t>!
        self._layers: dict[str, Any] = {}  # key prefix -> a layer on the relay's Redis
        self._pulled: set[str] = set()  # key prefixes whose LIST a task pops
        self._tasks: list[asyncio.Task[None]] = []  # not the side's: they never end by themselves
        self._stopping = False  # stop_pulling() was called
        self._blocked: dict[str, asyncio.Task[None]] = {}  # waiting on an empty LIST, by prefix

    def start(self, relay_channel: str) -> None:
        """Names are made from this process's relay channel: unique to it."""
        self.inbox = f"{HOMED_PREFIX}{relay_channel.rsplit('!', 1)[-1]}!"

    def name(self, conn_id: str) -> str:
        """The homed channel name of connection ``conn_id``."""
        return self.inbox + conn_id

    def pull(self, prefix: str) -> None:
        """Pop the homed channels on the layer of key prefix ``prefix`` (an owner's INBOX)."""
        if prefix in self._pulled:
            return
        layer = self._layer(prefix)
        if layer is not None:
            self._pulled.add(prefix)
            self._tasks.append(asyncio.get_running_loop().create_task(
                self._pull(prefix, layer), name=f"homed channels {prefix}"))

    async def discard(self, conn_id: str, kept: list[tuple[str, list[str]]]) -> None:
        """A socket is over: its homed channel leaves the groups its old app instances kept it
        in while it moved (their own disconnects skipped those discards)."""
        name = self.name(conn_id)
        for prefix, groups in kept:
            layer = self._layer(prefix)
            for group in groups if layer is not None else ():
                try:
                    await layer.group_discard(group, name)
                except Exception as exc:  # Redis away: the membership expires with the group
                    logger.warning("%s: could not leave group %r (%r)", conn_id, group, exc)

    def _layer(self, prefix: str) -> Any:
        layer = self._layers.get(prefix)
        if layer is not None:
            return layer
        if not prefix or len(prefix) > 200 or "{" in prefix or "}" in prefix:
            logger.warning("ignored a bad key prefix %r", prefix[:64])
            return None
        if len(self._layers) >= MAX_PREFIXES:
            logger.warning("ignored key prefix %r: already using %d prefixes", prefix,
                           MAX_PREFIXES)
            return None
        from channels_fleet.layers import RedisClusterChannelLayer

        layer = self._layers[prefix] = RedisClusterChannelLayer(
            hosts=list(self.settings.redis_url), prefix=prefix)
        return layer

    async def stop_pulling(self, timeout: float = 2.0) -> None:
        """Pop no more: a pop under way is delivered first; one waiting on an empty LIST is
        cancelled (what reaches the LIST then stays there)."""
        self._stopping = True
        for task in self._blocked.values():
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for layer in self._layers.values():
            await layer.close_pools()

    async def _pull(self, prefix: str, layer: Any) -> None:
        busy = False  # the last pop took messages: pop again without blocking
        failures = 0
        deliver, inbox = self.deliver, self.inbox
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping:
            if not busy:
                self._blocked[prefix] = task
            try:
                taken = await layer.receive_all(inbox, busy)
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except Exception as exc:  # the shard away past the layer's retry: wait, again
                failures += 1
                busy = False
                if failures == 1 or not isinstance(exc, RedisPermissionError):  # ACL: once
                    logger.warning("homed channels on %r: receive failed (%r); retrying",
                                   prefix, exc)
                await asyncio.sleep(RECEIVE_RETRY.delay(failures))
                continue
            finally:
                self._blocked.pop(prefix, None)
            failures = 0
            busy = bool(taken)
            start = len(inbox)
            for names, body in taken:
                try:
                    deliver([name[start:] for name in names], body)
                except Exception:  # a bug: this message is lost, not every later one
                    METRICS.messages_dropped.labels("other").inc(len(names))
                    logger.exception("homed channels on %r: a message could not be relayed",
                                     prefix)
