"""``RedisClusterChannelLayer``: the Channels layer API on a single Redis or a Redis Cluster.

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_fleet.layers.RedisClusterChannelLayer",
            "CONFIG": {"hosts": ["redis://redis-cluster:6379"]},
        }
    }

See docs/layer.md for the key layout, the element format and the cost of each call.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
import uuid
from collections import defaultdict
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from channels_redis.serializers import registry
from redis.exceptions import ResponseError

from ..exceptions import LayerConfigError
from . import _metrics
from .acl import is_refusal, refused
from .homing import HOMED, HOMED_KEY, homed
from .hosts import decode_hosts
from .keys import (
    HOMED_SHARE,
    channel_key,
    group_key,
    is_homed,
    is_process_local,
    non_local_name,
    pack_element,
)
from .loop_state import LoopState
from .mailbox import Mailbox
from .scripts import GROUP_ADD, GROUP_MEMBERS

logger = logging.getLogger(__name__)

# channels_redis options that make no sense here but must not break a drop-in config.
IGNORED_OPTIONS = {"random_prefix_length"}
#: Channel names whose check, LIST key and capacity a layer keeps (then it starts over).
TARGETS_KEPT = 10_000


class RedisClusterChannelLayer(BaseChannelLayer):
    """Channel layer on Redis Cluster or a single Redis (detected), API of channels_redis."""

    extensions = ["groups", "flush", "receive_future"]  # the last: worker/dispatch.py

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "receive" in vars(cls):
            # A receive of its own: the worker's dispatch must call it, not go around it.
            cls.extensions = [name for name in cls.extensions if name != "receive_future"]

    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: dict[Any, int] | None = None,
        symmetric_encryption_keys: Any = None,
        serializer_format: str = "msgpack",
        retry_timeout: float = 10.0,
        receive_batch: int = 100,
        receive_prefetch: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity)
        unknown = set(kwargs) - IGNORED_OPTIONS
        if unknown:
            raise LayerConfigError(
                f"unknown CHANNEL_LAYERS CONFIG option(s) for RedisClusterChannelLayer: "
                f"{', '.join(sorted(unknown))}"
            )
        if not isinstance(prefix, str) or not prefix:
            raise LayerConfigError("CHANNEL_LAYERS CONFIG 'prefix' must be a non-empty string")
        self.hosts = decode_hosts(hosts)
        self.prefix = prefix
        self.group_expiry = group_expiry
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.retry_timeout = retry_timeout
        self.receive_batch = receive_batch
        self.receive_prefetch = receive_prefetch
        self._serializer = registry.get_serializer(
            serializer_format,
            symmetric_encryption_keys=symmetric_encryption_keys,
            random_prefix_length=0,
            expiry=expiry,
        )
        # Plain msgpack (no encryption, no prefix) skips the registry's wrapper per message.
        plain = getattr(self._serializer, "crypter", True) is None and not getattr(
            self._serializer, "random_prefix_length", 1
        )
        self._serialize = self._serializer.as_bytes if plain else self._serializer.serialize
        self._deserialize = (
            self._serializer.from_bytes if plain else self._serializer.deserialize
        )
        self.client_prefix = uuid.uuid4().hex
        self._local_suffix = self.client_prefix + "!"
        # Process-local messages, shared by the event loops (each has its own LoopState).
        self.mailbox = Mailbox(self.get_capacity, expiry)
        self._states: dict[asyncio.AbstractEventLoop, LoopState] = {}
        # name -> (LIST key, capacity), for names checked already: the check (a regex) and
        # the key's f-string were a tenth of a send's own cost. Bounded: names come and go.
        self._targets: dict[str, tuple[str, int]] = {}
        self._receive_keys: dict[str, str] = {}  # name -> LIST key, for names receivable here

    def __str__(self) -> str:
        return f"{type(self).__name__}(hosts={[url for url, _ in self.hosts]})"

    def get_capacity(self, channel: str) -> int:
        """Channels' capacity (``capacity``, ``channel_capacity``); a homed channel's LIST
        holds HOMED_SHARE times that: every session homed on its interface shares it."""
        capacity: int = super().get_capacity(channel)
        return capacity * HOMED_SHARE if is_homed(channel) else capacity

    # Per-loop state

    def _ready_state(self) -> LoopState | None:
        """This loop's state when it is connected already (the hot path: no coroutine)."""
        state = self._states.get(asyncio.get_running_loop())
        return state if state is not None and state.ready else None

    async def _state(self) -> LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = LoopState(
                self.hosts, self.mailbox, retry_timeout=self.retry_timeout, expiry=self.expiry,
                receive_batch=self.receive_batch, receive_prefetch=self.receive_prefetch,
            )
            self._close_with(loop)
        if not state.ready:
            await state.start()
        return state

    def _close_with(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's connections when the loop closes (pytest gives each test one)."""
        original = loop.close
        layer = self

        def close(self_loop: asyncio.AbstractEventLoop) -> None:
            state = layer._states.pop(self_loop, None)
            if state is not None and not self_loop.is_running():
                self_loop.run_until_complete(state.close())
            self_loop.close = original  # type: ignore[method-assign]
            original()

        loop.close = types.MethodType(close, loop)  # type: ignore[method-assign]

    # Channel API

    def _target(self, channel: str) -> tuple[str, int]:
        """``channel``'s LIST key and capacity, once its name is checked (TypeError if bad)."""
        target = self._targets.get(channel) if channel.__class__ is str else None
        if target is None:
            self.require_valid_channel_name(channel)
            target = _keep(self._targets, channel,
                           (channel_key(self.prefix, channel), self.get_capacity(channel)))
        return target

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Send ``message`` to ``channel``; raise ChannelFull when it is at capacity."""
        assert isinstance(message, dict), "message is not a dict"
        key, capacity = self._target(channel)
        state = self._ready_state() or await self._state()
        body = self._serialize(message)
        expires = int((time.time() + self.expiry) * 1000)
        pushed = await state.sender.submit(key, pack_element(expires, channel, body), capacity)
        if not pushed:
            _metrics.channel_full("send")
            raise ChannelFull(channel)

    async def receive_all(self, inbox: str, busy: bool = False) -> list[tuple[list[str], bytes]]:
        """The next messages of every channel of ``inbox`` (``a.b!``: another process's
        process-local names), as (channel names, raw body) pairs in order, waiting for one
        unless ``busy`` (the last call returned some). For a process that routes a whole inbox
        itself: an interface, the consumer channels homed on it (homing.py). Nothing else in
        this process may receive on those names."""
        state = self._ready_state() or await self._state()
        return await state.receiver.take_all(channel_key(self.prefix, inbox), busy)

    async def receive(self, channel: str) -> dict[str, Any]:
        """Return the next message on ``channel``, waiting as long as it takes.

        Any event loop may receive (``async_to_sync`` runs each call on a new one). A
        process-local name must be one of this layer's (``new_channel()``); another raises
        AssertionError at once, as channels_redis does.
        """
        key = self.receive_key(channel)
        if key == HOMED_KEY:
            # Its messages reach the app by its ASGI receive() (homing.py): none come here.
            await asyncio.get_running_loop().create_future()
        state = self._ready_state() or await self._state()
        body = await state.receiver.receive(key, channel)
        return self._deserialize(body)

    def receive_key(self, channel: str) -> str:
        """Check ``channel`` once and return its LIST key, for repeated receive_future()."""
        key = self._receive_keys.get(channel) if channel.__class__ is str else None
        if key is not None:  # checked already: a shared name or one of this layer's
            return key
        self.require_valid_channel_name(channel)
        if is_process_local(channel) and not non_local_name(channel).endswith(self._local_suffix):
            if homed(channel) is not None:  # another process's name, given to this instance
                return HOMED_KEY
            # Its messages go to another process's layer: a receive here would wait forever.
            # AssertionError (raised, so that python -O keeps it) is what channels_redis raises.
            raise AssertionError(
                f"Wrong client prefix: {channel!r} is not a process-local channel of this "
                f"layer (client prefix {self.client_prefix}); receive only on names its "
                "new_channel() returned"
            )
        return _keep(self._receive_keys, channel, channel_key(self.prefix, channel))

    def receive_future(self, channel: str, key: str) -> asyncio.Future[bytes] | None:
        """``receive`` as a future of the raw body, without a coroutine or task.

        For dispatchers waiting on many sources (``channels_fleet.worker.dispatch``); ``key`` from
        :meth:`receive_key`. Decode the result with :meth:`decode`, give it up with
        :meth:`cancel_receive`. None until this loop is connected: call ``receive`` then.
        """
        if key == HOMED_KEY:
            return asyncio.get_running_loop().create_future()  # never set (homing.py)
        state = self._ready_state()
        if state is None:
            return None
        return state.receiver.wait(key, channel)

    def receive_stalled(self, channel: str) -> float:
        """Seconds this loop's receive of ``channel`` has waited for Redis to answer a pop
        (0 when not waiting, or answered lately). An empty LIST's BLMPOP answers within
        ``connection.MAX_BLOCK_SECONDS``; much longer means the node serving it is away (down,
        stopped, failing over)."""
        state = self._ready_state()
        since = state.receiver.unanswered.get(channel_key(self.prefix, channel)) if state else None
        return 0.0 if since is None else time.monotonic() - since

    def decode(self, body: bytes) -> dict[str, Any]:
        return self._deserialize(body)

    def cancel_receive(self, channel: str, key: str, future: asyncio.Future[bytes]) -> None:
        """Give up a :meth:`receive_future`; a message that reached it is kept for the next."""
        if key == HOMED_KEY:
            future.cancel()
            return
        state = self._ready_state()
        if state is not None:
            state.receiver.unwait(key, channel, future)
            return
        if future.done() and not future.cancelled() and future.exception() is None:
            # This loop's receiver is closed already; the message is not lost with it.
            if is_process_local(channel):
                self.mailbox.give_back(key, channel, future.result(), source=None)
            else:
                logger.warning("receive of %s given up after its loop's layer closed: "
                               "one message dropped", channel)
        future.cancel()

    async def new_channel(self, prefix: str = "specific") -> str:
        """A new process-local channel name, received by this layer's shared loop.

        In a worker's app instance, the first call gets the consumer's homed name instead
        (homing.py): its interface receives it, the same on every worker the socket moves to.
        """
        current = HOMED.get()
        if current is not None and prefix == "specific" and current.take(self):
            return current.name
        return f"{prefix}.{self.client_prefix}!{uuid.uuid4().hex}"

    async def command(self, key: str, *args: Any) -> Any:
        """Run one Redis command for ``key`` on the node serving it, with the layer's retries
        (the relay's own small keys: its session registry, relay/sessions.py)."""
        state = await self._state()
        return await state.executor.call(key, *args)

    # Groups extension

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (for ``group_expiry`` seconds)."""
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        mine = homed(channel)
        if mine is not None:
            mine.groups.add(group)
        state = await self._state()
        key = group_key(self.prefix, group)
        await state.executor.call(
            key, "EVALSHA", GROUP_ADD.sha, 1, key, time.time(), channel, int(self.group_expiry)
        )

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; no error if it is not a member.

        Not while its socket moves to another worker: the old instance leaving the groups of
        a homed name would drop what is sent to them until the next instance joins again.
        """
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        mine = homed(channel)
        if mine is not None:
            if mine.moving:
                return
            mine.groups.discard(group)
        state = await self._state()
        key = group_key(self.prefix, group)
        await state.executor.call(key, "ZREM", key, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send ``message`` to every member of ``group``; full members are skipped (counted)."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        state = await self._state()
        key = group_key(self.prefix, group)
        members = await state.executor.call(
            key, "EVALSHA", GROUP_MEMBERS.sha, 1, key, time.time() - self.group_expiry
        )
        if not members:
            return
        body = self._serialize(message)
        expires = int((time.time() + self.expiry) * 1000)
        # One element per LIST: process-local members of one prefix share theirs. Such a
        # LIST is the inbox of every channel of a process (a worker's thousands of consumers),
        # so the room it needs for this element is the capacity of each member it carries it
        # for: capacity 100 per process made a burst of presence messages while a worker took
        # over re-homed sockets drop a room's chat message for all of them.
        by_local_name: defaultdict[str, list[str]] = defaultdict(list)
        for channel in members.decode("ascii").split(","):
            by_local_name[non_local_name(channel)].append(channel)
        # A LIST's key is made once per process (or named channel), not once per member.
        by_key = {channel_key(self.prefix, name): names for name, names in by_local_name.items()}
        futures = [
            state.sender.submit(key, pack_element(expires, names, body),
                                self.get_capacity(names[0]) * len(names))
            for key, names in by_key.items()
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        full = sum(len(names) for names, ok in zip(by_key.values(), results, strict=True) if not ok)
        if full:
            _metrics.channel_full("group_send", full)
            logger.info("%d channels of group %s over capacity: message dropped for them",
                        full, group)

    # Flush extension

    async def flush(self) -> None:
        """Delete every key with this layer's prefix on every primary; clear local buffers."""
        state = await self._state()
        pattern = _glob_escape(self.prefix) + ":*"
        for node in state.router.primaries():
            cursor = 0
            while True:
                scan = ("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                try:
                    cursor, keys = await node.execute(*scan)
                except ResponseError as exc:
                    raise _refused(node, scan, exc) from exc
                if keys:
                    for reply in await node.pipeline([("UNLINK", k) for k in keys]):
                        if isinstance(reply, ResponseError) and is_refusal(reply):
                            raise _refused(node, ("UNLINK",), reply) from reply
                if int(cursor) == 0:
                    break
        state.receiver.buffers.clear()
        self.mailbox.clear()

    async def close_pools(self) -> None:
        """Stop this loop's receive loops and close its connections."""
        loop = asyncio.get_running_loop()
        state = self._states.pop(loop, None)
        if state is not None:
            await state.close()

    close = close_pools

    # Introspection (tests, metrics)

    def local_stats(self) -> dict[str, int]:
        """Messages held in this process: expired unread, dropped from full buffers, buffered.

        Process-local channels count for the whole layer; prefetched shared ones for this loop.
        """
        mailbox = self.mailbox
        stats = {
            "expired": mailbox.expired,
            "dropped_full": mailbox.dropped_full,
            "buffered": mailbox.buffered(),
        }
        try:
            state = self._states.get(asyncio.get_running_loop())
        except RuntimeError:
            state = None
        if state is not None:
            stats["expired"] += state.receiver.expired
            stats["buffered"] += sum(len(b) for b in state.receiver.buffers.values())
        return stats


def _refused(node: Any, args: tuple[Any, ...], exc: ResponseError) -> Exception:
    """What flush() raises for a failed SCAN or UNLINK: RedisPermissionError if the ACL said
    no (flush is for tests and tools: docs/redis-acl.md grants it to no role)."""
    if not is_refusal(exc):
        return exc
    return refused(node.address, node.options.get("username"), args, None, exc)


def _keep(kept: dict[str, Any], name: str, value: Any) -> Any:
    """Remember ``value`` for ``name`` in a cache of at most TARGETS_KEPT names (then it
    starts over: names come and go) and return it."""
    if len(kept) >= TARGETS_KEPT:
        kept.clear()
    kept[name] = value
    return value


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


__all__ = ["RedisClusterChannelLayer"]
