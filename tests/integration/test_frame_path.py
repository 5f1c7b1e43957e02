"""The modules one WebSocket frame passes through, measured: client -> interface -> Redis ->
worker -> consumer -> back.

A Gateway and a Host in this process on a real Redis, the worker's Channels replacements
installed as ``channels-fleet worker`` installs them, an unchanged ``AsyncWebsocketConsumer``
echoing. A profiler records which project modules run code between the client's frame reaching
the gateway and the echo being written to the client; modules that run for every one of 8
frames are the path (docs/architecture.md lists it). Growing it takes a deliberate change here.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from support.bindingapp.djangosetup import setup

setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402

from channels_fleet.dev.cluster import LocalRedis  # noqa: E402
from channels_fleet.interface.gateway import Gateway  # noqa: E402
from channels_fleet.interface.settings import InterfaceSettings  # noqa: E402
from channels_fleet.observability import consumers  # noqa: E402
from channels_fleet.worker import dbcleanup, dispatch  # noqa: E402
from channels_fleet.worker.host import Host  # noqa: E402
from channels_fleet.worker.settings import WorkerSettings  # noqa: E402

pytestmark = pytest.mark.timeout(60)

#: The path outside the channel layer, in the order a frame first reaches each module.
PATH = [
    "channels_fleet.interface.gateway",  # the client's frame, from Daphne
    "channels_fleet.interface.client",  # to its owner (relay_to)
    "channels_fleet.relay.relay",  # batched to the owner's channel
    "channels_fleet.interface.replay",  # kept until acknowledged (Unacked)
    "channels_fleet.relay.wire",  # the batch format, checked on arrival
    "channels_fleet.worker.instances",  # routed to its app instance by claim
    "channels_fleet.worker.instance",  # into the app instance's queue; taken, then handled:
    "channels_fleet.worker.inbound",  # the queue, or straight to the app's waiting receive
    "channels_fleet.worker.dispatch",  # Channels' await_many_dispatch, leaner: takes it
    "channels_fleet.worker.acks",  # acknowledged with the echo's batch
    "channels_fleet.observability.consumers",  # the handler's latency
    "channels_fleet.worker.dbcleanup",  # Channels' per-event connection cleanup, owed
    "channels_fleet.interface.owner_items",  # the echo's SEND, for its current claim
    "channels_fleet.interface.edge",  # the echo (its current claim's) written to the client
]
#: The layer's own modules on the path (layers/, one component: send, then receive).
LAYER = {
    "channels_fleet.layers.core", "channels_fleet.layers.keys", "channels_fleet.layers.sender",
    "channels_fleet.layers.connection", "channels_fleet.layers.node",
    "channels_fleet.layers.executor",
    "channels_fleet.layers.resp", "channels_fleet.layers.receiver", "channels_fleet.layers.waiters",
    "channels_fleet.layers.mailbox",
}


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data)

    async def connect(self) -> None:
        await self.accept()


def recorder(seen: dict[str, int]) -> Any:
    """A profile function noting each project module in the order its code first runs."""

    def profile(frame: Any, event: str, arg: Any) -> None:
        module = frame.f_globals.get("__name__", "")
        if event == "call" and module.startswith("channels_fleet"):
            seen.setdefault(module, len(seen))

    return profile


async def frame_paths(urls: list[str], frames: int) -> list[dict[str, int]]:
    gateway = Gateway(InterfaceSettings(redis_url=tuple(urls)))
    host = Host(Echo.as_asgi(), WorkerSettings(redis_url=tuple(urls), app="echo:app"))
    await gateway.start()
    await host.start()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(message: dict[str, Any]) -> None:
        outbox.put_nowait(message)

    scope = {"type": "websocket", "path": "/ws/", "headers": [], "subprotocols": [],
             "client": ["127.0.0.1", 1], "server": ["127.0.0.1", 2]}
    client = asyncio.ensure_future(gateway(scope, inbox.get, send))
    inbox.put_nowait({"type": "websocket.connect"})
    assert (await asyncio.wait_for(outbox.get(), 10))["type"] == "websocket.accept"
    paths = []
    try:
        for n in range(frames):
            await asyncio.sleep(0.05)
            seen: dict[str, int] = {}
            sys.setprofile(recorder(seen))
            try:
                inbox.put_nowait({"type": "websocket.receive", "text": f"frame {n}"})
                echo = await asyncio.wait_for(outbox.get(), 10)
            finally:
                sys.setprofile(None)
            assert echo == {"type": "websocket.send", "text": f"frame {n}"}
            paths.append(seen)
    finally:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(client, 10)
        await host.stop()
        await gateway.stop()
    return paths


async def test_a_frame_passes_through_fourteen_modules_and_the_layer(redis_single: LocalRedis) -> None:
    consumers.instrument_consumers()
    dbcleanup.install()
    dispatch.install()
    try:
        paths = await frame_paths(redis_single.urls, 8)
    finally:
        dispatch.uninstall()
        dbcleanup.uninstall()
        consumers.uninstrument_consumers()
    every = set(paths[0]).intersection(*paths[1:])
    ordered = sorted(every, key=lambda module: paths[-1][module])
    assert [m for m in ordered if m not in LAYER] == PATH  # 14, and the layer: 15 components
    assert every & LAYER == LAYER
