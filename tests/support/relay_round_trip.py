"""An interface's and a worker's relay sides on real layers, after one connect round trip.

The tests of the documented ACL users, on plain Redis and on TLS, both run the relay as the
interface and the worker do, each as its own user:

    async with relay_round_trip(iface_settings, worker_settings, layers) as relay:
        ...  # relay.iface, relay.worker, relay.channels["interface"]

On entry both sides are started, each the other's only peer; the interface sends a connect
envelope, the worker takes it from the connect queue and claims it (CLAIM, handled by the
interface), and the interface relays an EVENT to the worker. On exit both sides stop. The
relay layers go into ``layers`` for the test's fixture to close.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.relay import wire
from channels_fleet.relay.relay import relay_layer
from channels_fleet.relay.side import RelaySide


@dataclass
class RelayPair:
    """The two started sides and their process channels (``"interface"``, ``"worker"``)."""

    iface: RelaySide
    worker: RelaySide
    channels: dict[str, str]


@asynccontextmanager
async def relay_round_trip(iface_settings: Any, worker_settings: Any,
                           layers: list[RedisClusterChannelLayer]) -> AsyncIterator[RelayPair]:
    """Both sides started and one round trip made (see the module); both stopped on exit."""
    got: dict[str, asyncio.Future[Any]] = {
        kind: asyncio.get_running_loop().create_future() for kind in ("claim", "event")}
    channels: dict[str, str] = {}

    def side(layer: Any, prefix: str, s: Any, peer: str) -> RelaySide:
        return RelaySide(layer, prefix, s, on_undeliverable=lambda *a: None,
                         peers=lambda: [channels[peer]] if peer in channels else [],
                         on_dead=lambda dead: None, on_lost=lambda: None)

    def handler(kind: str) -> Any:
        async def handle(conn: str, payload: Any, sender: str) -> None:
            got[kind].set_result((conn, payload))
        return handle

    iface_layer, worker_layer = relay_layer(iface_settings), relay_layer(worker_settings)
    layers += [iface_layer, worker_layer]
    iface = side(iface_layer, wire.INTERFACE_CHANNELS, iface_settings, "worker")
    worker = side(worker_layer, wire.WORKER_CHANNELS, worker_settings, "interface")
    iface.handle({wire.CLAIM: handler("claim")})
    worker.handle({wire.EVENT: handler("event")})
    channels["interface"] = await iface.start()
    channels["worker"] = await worker.start()
    try:
        # The interface sends a connect envelope; the worker takes it and claims it.
        envelope = wire.connect_envelope(channels["interface"], "c1~1",
                                         {"type": "websocket", "path": "/ws/"}, 5.0)
        await iface.send_now(wire.CONNECT_QUEUE, envelope)
        taken = wire.parse_envelope(await worker_layer.receive(wire.CONNECT_QUEUE))
        worker.relay.post(taken["iface"], [wire.CLAIM, taken["conn"], channels["worker"]])
        assert await asyncio.wait_for(got["claim"], 5) == ("c1~1", channels["worker"])
        iface.relay.post(channels["worker"],
                         [wire.EVENT, "c1~1", {"type": "websocket.receive", "text": "x"}])
        assert (await asyncio.wait_for(got["event"], 5))[1]["text"] == "x"
        yield RelayPair(iface, worker, channels)
    finally:
        await worker.stop()
        await iface.stop()
