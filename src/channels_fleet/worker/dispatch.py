"""A leaner ``await_many_dispatch`` for worker processes: the same contract, fewer loop hops.

Every Channels consumer runs ``await_many_dispatch([receive, channel_receive], dispatch)``:
Channels wraps each receive in a new task per message and calls ``asyncio.wait`` (a set, a
waiter and a callback added to and removed from every task) each time. A group message that
reaches 2,500 consumers of one worker pays that 2,500 times, one after another: about half of
the worker's time in the 5,000-socket broadcast of ``bench/split.py``.

Here each source reports completion through one done-callback into a queue of ready sources,
and two receives are plain futures (no coroutine, no task): one on a layer that lists
``"receive_future"`` in its ``extensions`` (as Channels' layers list ``"groups"`` and
``"flush"``; ``RedisClusterChannelLayer`` does), from the layer's receiver; and the ASGI
``receive`` of an app instance (instance.py's, marked :func:`future_receive`; a receive that
middleware wrapped runs as it is). The contract is Channels' own: one receive
per source outstanding, the next one started only after the previous message's ``dispatch``
has returned, exceptions from a receive or from ``dispatch`` end the loop, and every
outstanding receive is given up on the way out. A message that reached a given-up receive
stays where the next receive finds it (the channel's local buffer, the instance's inbound
queue), as with a cancelled ``receive()``.

Worker processes call ``install()`` once, before consumers run (``channels-fleet worker``).
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from . import patching

_MODULES = ("channels.consumer", "channels.utils")  # where Channels 4 looks it up
#: The layer extension promising ``receive_key``, ``receive_future``, ``decode`` and
#: ``cancel_receive`` beside ``receive``.
RECEIVE_FUTURE = "receive_future"
_FUTURE_RECEIVE = "_channels_fleet_future_receive"
#: What :meth:`_FutureSource.result` gives for an event its owner dropped: nothing to dispatch.
_DROPPED = object()


def future_receive(receive: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an ASGI ``receive`` method whose object also offers ``receive_future()`` (the
    next event, as a future), ``took(event)`` (what the app receives for it, or None: dropped)
    and ``unread(future)`` (a given-up receive's event put back): run as those three, no task.
    A subclass that overrides ``receive`` loses the mark."""
    setattr(receive, _FUTURE_RECEIVE, True)
    return receive


class _TaskSource:
    """Any awaitable receive: a task per message, as Channels does."""

    __slots__ = ("call", "task")

    def __init__(self, call: Callable[[], Awaitable[Any]]) -> None:
        self.call = call
        self.task: asyncio.Future[Any] | None = None

    def start(self, on_done: Callable[[Any], None]) -> None:
        self.task = asyncio.ensure_future(self.call())
        self.task.add_done_callback(on_done)

    def result(self) -> Any:
        assert self.task is not None
        return self.task.result()

    async def stop(self) -> None:
        task = self.task
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


class _LayerSource(_TaskSource):
    """``functools.partial(layer.receive, channel)`` on a layer with ``RECEIVE_FUTURE``: a
    future, no task."""

    __slots__ = ("layer", "channel", "key", "future")

    def __init__(self, call: functools.partial[Any]) -> None:
        super().__init__(call)
        self.layer: Any = call.func.__self__  # type: ignore[attr-defined]
        self.channel: str = call.args[0]
        self.key = self.layer.receive_key(self.channel)  # checked once, not per message
        self.future: asyncio.Future[bytes] | None = None

    def start(self, on_done: Callable[[Any], None]) -> None:
        self.future = self.layer.receive_future(self.channel, self.key)
        if self.future is None:  # first receive on this loop: connect through receive()
            super().start(on_done)
            return
        self.task = None
        self.future.add_done_callback(on_done)

    def result(self) -> Any:
        if self.future is None:
            return super().result()
        return self.layer.decode(self.future.result())

    async def stop(self) -> None:
        if self.future is None:
            await super().stop()
            return
        self.layer.cancel_receive(self.channel, self.key, self.future)


class _FutureSource(_TaskSource):
    """A bound ``receive`` marked :func:`future_receive`: its object's future, no task."""

    __slots__ = ("owner", "future")

    def __init__(self, call: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(call)
        self.owner: Any = call.__self__  # type: ignore[attr-defined]
        self.future: asyncio.Future[Any] | None = None

    def start(self, on_done: Callable[[Any], None]) -> None:
        self.future = self.owner.receive_future()
        self.future.add_done_callback(on_done)

    def result(self) -> Any:
        future, self.future = self.future, None
        assert future is not None
        message = self.owner.took(future.result())
        return _DROPPED if message is None else message

    async def stop(self) -> None:
        future, self.future = self.future, None
        if future is not None:
            self.owner.unread(future)


def _source(call: Callable[[], Awaitable[Any]]) -> _TaskSource:
    if getattr(getattr(call, "__func__", None), _FUTURE_RECEIVE, False):
        return _FutureSource(call)
    if (
        isinstance(call, functools.partial)
        and getattr(call.func, "__name__", None) == "receive"
        and RECEIVE_FUTURE in getattr(getattr(call.func, "__self__", None), "extensions", ())
        and len(call.args) == 1
        and not call.keywords
    ):
        return _LayerSource(call)
    return _TaskSource(call)


async def await_many_dispatch(
    consumer_callables: list[Callable[[], Awaitable[Any]]],
    dispatch: Callable[[Any], Awaitable[Any]],
) -> None:
    """Drop-in for ``channels.utils.await_many_dispatch`` (see the module docstring)."""
    loop = asyncio.get_running_loop()
    sources = [_source(call) for call in consumer_callables]
    ready: deque[int] = deque()  # sources whose receive finished, in the order they did
    wake: list[asyncio.Future[None] | None] = [None]

    def done_callback(index: int) -> Callable[[Any], None]:
        def on_done(_: Any) -> None:
            ready.append(index)
            waiter = wake[0]
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

        return on_done

    callbacks = [done_callback(i) for i in range(len(sources))]
    try:
        for source, callback in zip(sources, callbacks, strict=True):
            source.start(callback)
        while True:
            while not ready:
                waiter: asyncio.Future[None] = loop.create_future()
                wake[0] = waiter
                await waiter
            index = ready.popleft()
            message = sources[index].result()
            if message is not _DROPPED:
                await dispatch(message)
            sources[index].start(callbacks[index])
    finally:
        wake[0] = None
        for source in sources:
            await source.stop()


def install() -> bool:
    """Use this ``await_many_dispatch`` where Channels looks it up; False if done already."""
    return patching.replace(_MODULES, "await_many_dispatch", await_many_dispatch)


def uninstall() -> None:
    """Undo :func:`install` (for tests)."""
    patching.restore(_MODULES, "await_many_dispatch")
