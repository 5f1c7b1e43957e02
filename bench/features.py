"""What the Demultiplexer and Binding cost, measured in one run on one real Redis.

- echo: a JSON echo consumer reached directly, and as a stream of a Demultiplexer (same process,
  WebsocketCommunicator; the difference is the demultiplexer's own work per frame);
- push: CardBinding.push() in a plain thread (as a gunicorn view does) -> the subscribed socket
  has the change; and the same after a real Card.save() (adds the sqlite commit).

Prints one line ``features: demux_overhead_us=N push_p50_ms=N push_p95_ms=N`` then the details.
Echo figures are the best of 3 interleaved runs (the machine is shared).

    .venv/bin/python bench/features.py            # starts its own redis-server on a free port
    .venv/bin/python bench/features.py --cluster  # on a 3-master + 3-replica Redis Cluster
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' support package: bindingapp

from support.bindingapp.djangosetup import create_tables, setup  # noqa: E402

setup()

from channels import DEFAULT_CHANNEL_LAYER  # noqa: E402
from channels.db import database_sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.layers import channel_layers  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from support.bindingapp.bindings import CardBinding  # noqa: E402
from support.bindingapp.models import Board, Card  # noqa: E402

from channels_fleet.dev.cluster import LocalRedis  # noqa: E402
from channels_fleet.layers import RedisClusterChannelLayer  # noqa: E402
from channels_fleet.multiplex import Demultiplexer  # noqa: E402

ECHOES = 2000
SENDS = 100
PUSHES = 300


class Echo(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(content)


class Mux(Demultiplexer):
    consumers = {"echo": Echo}


async def echo_seconds(app, wrap) -> float:
    comm = WebsocketCommunicator(app, "/ws/")
    assert (await comm.connect())[0]
    start = time.perf_counter()
    for i in range(ECHOES):
        await comm.send_json_to(wrap(i))
        await comm.receive_json_from()
    elapsed = time.perf_counter() - start
    await comm.disconnect()
    return elapsed


async def push_latencies(board, save: bool) -> list[float]:
    comm = WebsocketCommunicator(CardBinding.consumer.as_asgi(), "/ws/")
    comm.scope["user"] = User(username="bench")
    assert (await comm.connect())[0]
    await comm.send_json_to({"action": "subscribe", "data": {"board": board.pk}})
    await comm.receive_json_from()
    card = await database_sync_to_async(Card.objects.create)(board=board, title="t")
    await comm.receive_json_from()
    out = []
    for i in range(PUSHES):
        card.title = f"t{i}"
        start = time.perf_counter()
        if save:
            await asyncio.to_thread(card.save)
        else:
            await asyncio.to_thread(CardBinding.push, [card], "update")
        await comm.receive_json_from(timeout=5)
        out.append(time.perf_counter() - start)
    await comm.disconnect()
    return out


def send_costs(layer) -> tuple[float, float]:
    """p50 seconds of one group_send from a plain thread: async_to_sync (a loop and connections
    per call) against channels_fleet.bridge.run_sync (one loop per process)."""
    from asgiref.sync import async_to_sync

    from channels_fleet.bridge import run_sync

    message = {"type": "x.y"}
    out = []
    for call in (lambda: async_to_sync(layer.group_send)("g", message),
                 lambda: run_sync(lambda: layer.group_send("g", message))):
        times = []
        for _ in range(SENDS):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        out.append(sorted(times)[SENDS // 2])
    return out[0], out[1]


async def main(urls: list[str]) -> None:
    layer = RedisClusterChannelLayer(hosts=urls, prefix="benchfeat")
    channel_layers.backends[DEFAULT_CHANNEL_LAYER] = layer
    await database_sync_to_async(create_tables)()
    board = await database_sync_to_async(Board.objects.create)(name="bench")
    directs, muxeds = [], []
    for _ in range(3):
        directs.append(await echo_seconds(Echo.as_asgi(), lambda i: {"n": i}))
        muxeds.append(await echo_seconds(
            Mux.as_asgi(), lambda i: {"stream": "echo", "payload": {"n": i}}))
    direct, muxed = min(directs), min(muxeds)
    pushes = sorted(await push_latencies(board, save=False))
    saves = sorted(await push_latencies(board, save=True))
    naive, bridged = await asyncio.to_thread(send_costs, layer)
    await layer.flush()
    overhead_us = (muxed - direct) / ECHOES * 1e6
    p50, p95 = pushes[len(pushes) // 2] * 1e3, pushes[int(len(pushes) * 0.95)] * 1e3
    print(f"features: demux_overhead_us={overhead_us:.0f} push_p50_ms={p50:.2f} "
          f"push_p95_ms={p95:.2f}")
    print(f"  echo direct: {ECHOES / direct:.0f}/s ({direct / ECHOES * 1e6:.0f} us/round trip)")
    print(f"  echo via Demultiplexer: {ECHOES / muxed:.0f}/s ({muxed / ECHOES * 1e6:.0f} us)")
    print(f"  push() -> socket over {PUSHES}: p50 {p50:.2f} ms, p95 {p95:.2f} ms, "
          f"mean {statistics.mean(pushes) * 1e3:.2f} ms")
    print(f"  group_send from a plain thread, p50: async_to_sync {naive * 1e3:.2f} ms, "
          f"bridge.run_sync {bridged * 1e3:.2f} ms")
    print(f"  save() -> socket over {PUSHES}: p50 {saves[len(saves) // 2] * 1e3:.2f} ms, "
          f"p95 {saves[int(len(saves) * 0.95)] * 1e3:.2f} ms (sqlite file commit included)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.pop("CHANNELS_FLEET_REDIS_URL", None)
        cluster = "--cluster" in sys.argv
        redis = LocalRedis(Path(tmp), masters=3 if cluster else 1, replicas=int(cluster)).start()
        try:
            print("on a Redis Cluster" if cluster else "on one Redis")
            asyncio.run(main(redis.urls[:3]))
        finally:
            redis.stop()
