"""Background channels (``--channels``) on a real Redis: a stopping worker loses no message.

Channels' ``Worker``, which served them before, received as fast as the layer gave into an
unbounded queue in memory: a worker stopped with a backlog (every rollout) dropped what it had
queued, and the layer's prefetch for receivers that never came back died with the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import msgpack
import pytest
import redis
from channels.consumer import AsyncConsumer
from channels.layers import channel_layers
from support.bindingapp.djangosetup import setup

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.layers.keys import channel_key, unpack_element
from channels_fleet.worker.background import BackgroundChannels, close_project_layers

setup()  # a consumer's dispatch closes old database connections: Django is configured

pytestmark = pytest.mark.timeout(60)

PREFIX = "bg"
CHANNEL = "tasks"
ALIAS = "background-test"


class Recorder(AsyncConsumer):
    """Takes a little while per message, as real background work does."""

    channel_layer_alias = ALIAS  # registered by the layer fixture: no Django settings here
    done: list[int] = []

    async def task_record(self, message: dict) -> None:
        await asyncio.sleep(0.002)
        if message["value"] == "raise":
            raise RuntimeError("this task fails")
        self.done.append(message["value"])


@pytest.fixture
async def layer(redis_single: LocalRedis) -> AsyncIterator[RedisClusterChannelLayer]:
    """The project's layer (registered as Channels' layer ALIAS); prefetch 16, its default."""
    layer = RedisClusterChannelLayer(hosts=redis_single.urls, prefix=PREFIX, capacity=1000)
    await layer.flush()  # what an earlier test left in the shared Redis
    channel_layers.backends[ALIAS] = layer
    try:
        yield layer
    finally:
        del channel_layers.backends[ALIAS]
        await layer.close_pools()


def left_in_redis(server: LocalRedis) -> list[int]:
    """The values of the messages still in the channel's LIST, in order."""
    with redis.Redis.from_url(server.urls[0]) as client:
        elements = client.lrange(channel_key(PREFIX, CHANNEL), 0, -1)
    return [msgpack.unpackb(unpack_element(element)[2])["value"] for element in elements]


async def wait_for(condition, what: str, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def test_stop_with_a_backlog__every_message_handled_or_back_in_redis(
        redis_single: LocalRedis, layer: RedisClusterChannelLayer) -> None:
    done = Recorder.done = []
    for value in range(300):
        await layer.send(CHANNEL, {"type": "task.record", "value": value})
    background = BackgroundChannels(Recorder.as_asgi(), [CHANNEL], layer)
    running = asyncio.ensure_future(background.run())
    await wait_for(lambda: len(done) >= 30, "30 tasks ran")

    await background.stop(5)
    handled = list(done)
    await close_project_layers()  # what the worker does once drained
    await asyncio.sleep(0.2)

    assert done == handled, "a task ran after the stop"
    left = left_in_redis(redis_single)
    assert handled + left == list(range(300)), (
        f"handled {len(handled)}, left in Redis {len(left)} (first {left[:3]}): "
        f"{300 - len(handled) - len(left)} lost or out of order")
    assert not running.done() or running.exception() is None
    running.cancel()


async def test_a_consumer_that_raises__logged_and_the_next_message_goes_to_a_new_instance(
        layer: RedisClusterChannelLayer, caplog: pytest.LogCaptureFixture) -> None:
    done = Recorder.done = []
    background = BackgroundChannels(Recorder.as_asgi(), [CHANNEL], layer)
    running = asyncio.ensure_future(background.run())
    try:
        with caplog.at_level(logging.WARNING, logger="channels_fleet.worker.background"):
            for value in [1, 2, "raise", 3]:
                await layer.send(CHANNEL, {"type": "task.record", "value": value})
            await layer.send(CHANNEL, {"value": "no type"})
            await layer.send(CHANNEL, {"type": "task.record", "value": 4})
            await wait_for(lambda: done == [1, 2, 3, 4], "every other task ran")
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("its consumer raised RuntimeError('this task fails')" in e for e in errors)
        assert any("dropped a message without a 'type'" in e for e in errors), errors
    finally:
        await background.stop(1)
        running.cancel()


async def test_a_consumer_that_sends_to_no_client__a_clear_error(
        caplog: pytest.LogCaptureFixture) -> None:
    class Replier(AsyncConsumer):
        channel_layer_alias = None
        async def task_reply(self, message: dict) -> None:
            await self.send({"type": "websocket.send", "text": "to whom?"})

    class OneMessage:
        """A layer with one message in it."""

        def __init__(self) -> None:
            self.messages = [{"type": "task.reply"}]

        async def receive(self, channel: str) -> dict:
            if not self.messages:
                await asyncio.Event().wait()
            return self.messages.pop()

    background = BackgroundChannels(Replier.as_asgi(), ["replies"], OneMessage())
    running = asyncio.ensure_future(background.run())
    try:
        with caplog.at_level(logging.ERROR, logger="channels_fleet.worker.background"):
            await wait_for(lambda: caplog.records, "the error was logged")
        assert "a channel consumer has no client to send 'websocket.send' to" in caplog.text
    finally:
        await background.stop(1)
        running.cancel()


def test_no_channel_layer__refused_with_its_cause() -> None:
    with pytest.raises(ValueError, match="CHANNEL_LAYERS has no 'default'"):
        BackgroundChannels(Recorder.as_asgi(), [CHANNEL], None)
