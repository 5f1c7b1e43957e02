"""The worker's ``await_many_dispatch``: Channels' contract, on a real Redis and in memory."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.worker import dispatch
from channels_fleet.worker.inbound import Inbound

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["fleet", "memory"])
async def layer(request: pytest.FixtureRequest, redis_single: LocalRedis) -> Any:
    if request.param == "memory":
        yield InMemoryChannelLayer()
        return
    layer = RedisClusterChannelLayer(hosts=redis_single.urls, prefix=f"dispatch{id(request)}")
    yield layer
    await layer.flush()
    await layer.close_pools()


class Stop(Exception):
    pass


async def run(layer: Any, client: asyncio.Queue, handle: Any) -> tuple[str, asyncio.Task[None]]:
    """A consumer's loop: the client's events and its channel, as AsyncConsumer wires them."""
    channel = await layer.new_channel()
    sources = [client.get, functools.partial(layer.receive, channel)]
    task = asyncio.ensure_future(dispatch.await_many_dispatch(sources, handle))
    return channel, task


async def test_both_sources_dispatched_each_in_order(layer: Any) -> None:
    client: asyncio.Queue = asyncio.Queue()
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def handle(message: dict[str, Any]) -> None:
        seen.append((message["type"], message["n"]))
        if len(seen) == 100:
            done.set()

    channel, task = await run(layer, client, handle)
    for n in range(50):
        client.put_nowait({"type": "client", "n": n})
        await layer.send(channel, {"type": "layer", "n": n})
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for kind in ("client", "layer"):
        assert [n for k, n in seen if k == kind] == list(range(50))


async def test_next_receive_waits_for_dispatch_to_return(layer: Any) -> None:
    """One message at a time per source: the second stays queued while the first is handled."""
    client: asyncio.Queue = asyncio.Queue()
    handling = asyncio.Event()
    release = asyncio.Event()
    seen: list[int] = []

    async def handle(message: dict[str, Any]) -> None:
        seen.append(message["n"])
        handling.set()
        await release.wait()

    channel, task = await run(layer, client, handle)
    await layer.send(channel, {"type": "layer", "n": 1})
    await asyncio.wait_for(handling.wait(), 10)
    await layer.send(channel, {"type": "layer", "n": 2})
    await asyncio.sleep(0.2)
    assert seen == [1]  # the second is not taken while the first is being handled
    handling.clear()
    release.set()
    await asyncio.wait_for(handling.wait(), 10)
    assert seen == [1, 2]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_exception_in_dispatch_ends_the_loop_and_loses_no_message(
        redis_single: LocalRedis) -> None:
    """The consumer stops on a client event; a message on our layer that arrived meanwhile
    stays in its channel (as with a cancelled receive) instead of vanishing with the loop.
    (Channels' own loop, and any other layer, drop it.)"""
    layer = RedisClusterChannelLayer(hosts=redis_single.urls, prefix="dispatchstop")
    client: asyncio.Queue = asyncio.Queue()
    first = asyncio.Event()

    async def handle(message: dict[str, Any]) -> None:
        if message["type"] == "client":
            await asyncio.sleep(0.2)  # the layer message arrives while this runs
            raise Stop
        first.set()

    channel, task = await run(layer, client, handle)
    await layer.send(channel, {"type": "layer", "n": 1})  # connected: futures from here on
    await asyncio.wait_for(first.wait(), 5)
    client.put_nowait({"type": "client", "n": 0})
    await asyncio.sleep(0.05)
    await layer.send(channel, {"type": "layer", "n": 7})
    with pytest.raises(Stop):
        await task
    assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 7
    await layer.flush()
    await layer.close_pools()


async def test_an_exception_in_a_receive_ends_the_loop(layer: Any) -> None:
    async def broken() -> dict[str, Any]:
        raise RuntimeError("receive failed")

    channel = await layer.new_channel()
    sources = [broken, functools.partial(layer.receive, channel)]
    with pytest.raises(RuntimeError, match="receive failed"):
        await asyncio.wait_for(dispatch.await_many_dispatch(sources, lambda m: None), 5)


def test_install_replaces_the_names_channels_looks_up() -> None:
    import channels.consumer
    import channels.utils

    try:
        assert dispatch.install()
        assert not dispatch.install()
        for module in (channels.consumer, channels.utils):
            assert module.await_many_dispatch is dispatch.await_many_dispatch
    finally:
        dispatch.uninstall()
    assert channels.consumer.await_many_dispatch is not dispatch.await_many_dispatch


async def test_a_layer_subclass_with_its_own_receive__is_called_not_gone_around(
        redis_single: LocalRedis) -> None:
    """The fast path (futures straight from our layer) is for layers that promise it in their
    ``extensions``; a subclass that overrides ``receive`` loses the promise, so its receive
    runs for every message."""
    received: list[int] = []

    class Counting(RedisClusterChannelLayer):
        async def receive(self, channel: str) -> dict[str, Any]:
            message = await super().receive(channel)
            received.append(message["n"])
            return message

    assert "receive_future" in RedisClusterChannelLayer.extensions
    assert "receive_future" not in Counting.extensions
    layer = Counting(hosts=redis_single.urls, prefix="dispatchsub")
    seen: list[int] = []
    done = asyncio.Event()

    async def handle(message: dict[str, Any]) -> None:
        seen.append(message["n"])
        if len(seen) == 3:
            done.set()

    channel, task = await run(layer, asyncio.Queue(), handle)
    for n in range(3):
        await layer.send(channel, {"type": "layer", "n": n})
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert seen == received == [0, 1, 2]
    await layer.flush()
    await layer.close_pools()


class Instance:
    """An ASGI receive marked ``future_receive``, as worker/instance.py's AppInstance: ints
    queued, odd ones dropped by ``took``."""

    def __init__(self) -> None:
        self.inbound = Inbound(10)
        self.coroutine_calls = 0

    @dispatch.future_receive
    async def receive(self) -> dict[str, Any]:
        self.coroutine_calls += 1
        raise AssertionError("the coroutine was called")

    def receive_future(self) -> asyncio.Future[Any]:
        return self.inbound.next()

    def took(self, event: dict[str, Any]) -> dict[str, Any] | None:
        return None if event["n"] % 2 else event

    def unread(self, future: asyncio.Future[Any]) -> None:
        self.inbound.unread(future)


async def dispatching(instance: Instance, layer: Any, count: int) -> tuple[
        str, asyncio.Task[None], list[tuple[str, int]], asyncio.Event]:
    """A consumer's loop on ``instance``'s receive and a new channel: its channel, its task,
    what it dispatched, and an event set once that is ``count`` messages."""
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def handle(message: dict[str, Any]) -> None:
        seen.append((message["type"], message["n"]))
        if len(seen) == count:
            done.set()

    channel = await layer.new_channel()
    task = asyncio.ensure_future(dispatch.await_many_dispatch(
        [instance.receive, functools.partial(layer.receive, channel)], handle))
    return channel, task, seen, done


async def test_a_marked_receive_is_waited_on_as_a_future(layer: Any) -> None:
    """Dispatch waits on ``receive_future()`` (no task per event) and never calls the
    coroutine; what ``took`` drops is not dispatched. A future handed an event as the loop
    ends gives it back: the next receive finds it."""
    instance = Instance()
    channel, task, seen, done = await dispatching(instance, layer, 6)
    for n in range(6):
        instance.inbound.put({"type": "client", "n": n})
    for n in range(3):
        await layer.send(channel, {"type": "layer", "n": n})
    await asyncio.wait_for(done.wait(), 10)
    assert instance.inbound.waiting
    instance.inbound.put({"type": "client", "n": 6})  # handed over, the loop ends unread
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not instance.inbound.waiting and instance.coroutine_calls == 0
    assert instance.inbound.next().result() == {"type": "client", "n": 6}
    assert [n for k, n in seen if k == "client"] == [0, 2, 4]
    assert [n for k, n in seen if k == "layer"] == [0, 1, 2]


async def test_a_wrapped_or_overridden_receive_runs_as_it_is(layer: Any) -> None:
    """Middleware that wraps the receive, or a subclass that overrides it, loses the mark:
    its coroutine runs for every event."""

    class Overriding(Instance):
        async def receive(self) -> dict[str, Any]:
            self.coroutine_calls += 1
            return await self.inbound.next()

    instance = Overriding()
    _, task, seen, done = await dispatching(instance, layer, 3)
    for n in range(3):
        instance.inbound.put({"type": "client", "n": n})
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert seen == [("client", 0), ("client", 1), ("client", 2)]
    assert instance.coroutine_calls >= 3
