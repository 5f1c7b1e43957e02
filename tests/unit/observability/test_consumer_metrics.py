"""instrument_consumers: handler latency by consumer class, for unchanged Channels consumers."""

from __future__ import annotations

import asyncio
import time

import pytest
from support.bindingapp.djangosetup import setup

setup()  # the unit tests' shared Django configuration (consumers read CHANNEL_LAYERS)

from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from channels_fleet.observability.consumers import (  # noqa: E402
    instrument_consumers,
    uninstrument_consumers,
)
from channels_fleet.observability.metrics import FleetMetrics, consumer_label  # noqa: E402

pytestmark = pytest.mark.timeout(20)


class SlowAsync(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await asyncio.sleep(0.05)
        await self.send(text_data=text_data)


class SlowSync(WebsocketConsumer):
    def connect(self):
        self.accept()

    def receive(self, text_data=None, bytes_data=None):
        time.sleep(0.03)
        self.send(text_data=text_data)


@pytest.fixture
def registry():
    registry = CollectorRegistry()
    uninstrument_consumers()  # whatever another test in this process did
    assert instrument_consumers(FleetMetrics(registry)) is True
    try:
        yield registry
    finally:
        uninstrument_consumers()


def _count(registry, cls) -> float:
    return registry.get_sample_value(
        "channels_fleet_handler_latency_seconds_count", {"consumer": consumer_label(cls)}) or 0


def _sum(registry, cls) -> float:
    return registry.get_sample_value(
        "channels_fleet_handler_latency_seconds_sum", {"consumer": consumer_label(cls)}) or 0


@pytest.mark.parametrize("consumer", [SlowAsync, SlowSync])
async def test_each_event_is_timed_under_its_class(registry, consumer) -> None:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/ws/")
    connected, _ = await comm.connect()
    assert connected
    for i in range(3):
        await comm.send_to(text_data=f"m{i}")
        assert await comm.receive_from() == f"m{i}"
    await comm.disconnect()
    # connect + 3 receives + disconnect
    assert _count(registry, consumer) == 5
    assert _sum(registry, consumer) >= 3 * (0.05 if consumer is SlowAsync else 0.03)
    assert consumer_label(consumer).endswith("test_consumer_metrics." + consumer.__name__)


async def test_instrumenting_twice_is_a_no_op(registry) -> None:
    assert instrument_consumers() is False
    comm = WebsocketCommunicator(SlowAsync.as_asgi(), "/ws/")
    await comm.connect()
    await comm.disconnect()
    assert _count(registry, SlowAsync) == 2  # not 4: wrapped once


async def test_uninstrument_restores_the_originals() -> None:
    from channels.consumer import AsyncConsumer, SyncConsumer

    uninstrument_consumers()
    before = (AsyncConsumer.__dict__["dispatch"], SyncConsumer.__dict__["dispatch"])
    instrument_consumers(FleetMetrics(CollectorRegistry()))
    assert AsyncConsumer.__dict__["dispatch"] is not before[0]
    uninstrument_consumers()
    assert (AsyncConsumer.__dict__["dispatch"], SyncConsumer.__dict__["dispatch"]) == before
