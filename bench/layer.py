"""Benchmark: channels-fleet's RedisClusterChannelLayer against channels_redis, same run.

Starts its own single Redis and 3-master Redis Cluster (real redis-server processes on free
loopback ports), runs both layers on the same single Redis, ours also on the cluster, and
prints one summary line followed by the absolute figures:

    layer: throughput_ratio_1=X throughput_ratio_16=X rtt_p50_ratio=X group1000_ratio=X \
cluster_vs_single=X loop=uvloop

Both layers run on the event loop the services run (uvloop where installed:
services/eventloop.py); ``--loop asyncio`` measures both on asyncio's own loop.

Run with ``make bench-layer`` (or ``.venv/bin/python bench/layer.py [--loop asyncio]``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from channels_redis.core import RedisChannelLayer

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.services import eventloop
from channels_fleet.settings import EVENT_LOOPS

BIG = 10_000_000  # capacity high enough that producers never see ChannelFull
MESSAGE = {"type": "bench.message", "text": "x" * 32}


async def throughput(layer: Any, pairs: int, total: int, tag: str) -> float:
    """Messages/s for ``pairs`` producer/consumer task pairs on ``pairs`` named channels."""
    per_pair = total // pairs
    channels = [f"bench.{tag}.{i}" for i in range(pairs)]

    async def produce(channel: str) -> None:
        for _ in range(per_pair):
            await layer.send(channel, MESSAGE)

    async def consume(channel: str) -> None:
        for _ in range(per_pair):
            await layer.receive(channel)

    start = time.perf_counter()
    await asyncio.gather(*(produce(c) for c in channels), *(consume(c) for c in channels))
    return per_pair * pairs / (time.perf_counter() - start)


async def rtt_p50(layer: Any, rounds: int) -> float:
    """Median seconds of one send then receive on a process-local channel."""
    channel = await layer.new_channel()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await layer.send(channel, MESSAGE)
        await layer.receive(channel)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def group_fanout(layer: Any, members: int, repeats: int) -> float:
    """Median seconds from group_send until all ``members`` receivers have the message."""
    channels = [await layer.new_channel() for _ in range(members)]
    group = f"bench-group-{members}"
    for channel in channels:
        await layer.group_add(group, channel)
    samples = []
    for _ in range(repeats):
        receivers = [asyncio.ensure_future(layer.receive(c)) for c in channels]
        await asyncio.sleep(0.2)  # let every receiver start waiting
        start = time.perf_counter()
        await layer.group_send(group, MESSAGE)
        await asyncio.gather(*receivers)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def measure(layers: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every figure for every layer, interleaved so both see the same machine load."""
    results: dict[str, dict[str, float]] = {name: {} for name in layers}
    try:
        for layer in layers.values():
            await layer.flush()
        for name, layer in layers.items():
            results[name]["t1"] = await throughput(layer, 1, args.messages, name + "1")
        for name, layer in layers.items():
            results[name]["t16"] = await throughput(layer, 16, args.messages, name + "16")
        for name, layer in layers.items():
            results[name]["p50"] = await rtt_p50(layer, args.rounds)
        for name, layer in layers.items():
            results[name]["g1000"] = await group_fanout(layer, 1000, args.repeats)
        return results
    finally:
        for layer in layers.values():
            await layer.flush()
            await layer.close_pools()


async def measure_t16(make_layer: Any, args: argparse.Namespace) -> float:
    layer = make_layer()
    try:
        await layer.flush()
        return await throughput(layer, 16, args.messages, "c16")
    finally:
        await layer.flush()
        await layer.close_pools()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per throughput run")
    parser.add_argument("--rounds", type=int, default=2000, help="send+receive round trips")
    parser.add_argument("--repeats", type=int, default=5, help="group_send repeats")
    parser.add_argument("--cluster-rounds", type=int, default=3,
                        help="alternating single/cluster 16-pair runs (median of each)")
    parser.add_argument("--loop", choices=EVENT_LOOPS, default="auto",
                        help="event loop, as CHANNELS_FLEET_LOOP (auto: uvloop where installed)")
    args = parser.parse_args()
    loop = eventloop.use(args.loop)

    with tempfile.TemporaryDirectory(prefix="bench-layer-") as tmp:
        single = LocalRedis(Path(tmp) / "single", masters=1, replicas=0).start()
        cluster = LocalRedis(Path(tmp) / "cluster", masters=3, replicas=0).start()
        try:
            url = single.urls[0]
            print(f"single Redis {url}; cluster {','.join(cluster.urls)}", file=sys.stderr)
            print("peer: channels_redis RedisChannelLayer with socket_timeout=None in its host "
                  "dict (redis-py 8's default 5 s socket_timeout breaks its idle receive)",
                  file=sys.stderr)

            def peer() -> Any:
                return RedisChannelLayer(
                    hosts=[{"address": url, "socket_timeout": None}], capacity=BIG,
                    prefix="benchpeer",
                )

            def ours() -> Any:
                return RedisClusterChannelLayer(hosts=[url], capacity=BIG, prefix="benchours")

            def ours_cluster() -> Any:
                return RedisClusterChannelLayer(
                    hosts=cluster.urls, capacity=BIG, prefix="benchours"
                )

            both = asyncio.run(measure({"peer": peer(), "ours": ours()}, args))
            p, o = both["peer"], both["ours"]
            # Single and cluster alternate, median of each: the machine's load drifts.
            singles, clusters = [], []
            for _ in range(args.cluster_rounds):
                singles.append(asyncio.run(measure_t16(ours, args)))
                clusters.append(asyncio.run(measure_t16(ours_cluster, args)))
            s16, c16 = statistics.median(singles), statistics.median(clusters)
        finally:
            single.stop()
            cluster.stop()

    print(
        f"layer: throughput_ratio_1={o['t1'] / p['t1']:.2f} "
        f"throughput_ratio_16={o['t16'] / p['t16']:.2f} "
        f"rtt_p50_ratio={o['p50'] / p['p50']:.2f} "
        f"group1000_ratio={o['g1000'] / p['g1000']:.2f} "
        f"cluster_vs_single={c16 / s16:.2f} loop={loop}"
    )
    print(
        f"ours_msgs_s={o['t1']:.0f} peer_msgs_s={p['t1']:.0f} "
        f"ours_msgs_s_16={o['t16']:.0f} peer_msgs_s_16={p['t16']:.0f} "
        f"ours_p50_ms={o['p50'] * 1000:.3f} peer_p50_ms={p['p50'] * 1000:.3f} "
        f"ours_group1000_ms={o['g1000'] * 1000:.1f} peer_group1000_ms={p['g1000'] * 1000:.1f} "
        f"ours_single_msgs_s_16={s16:.0f} ours_cluster_msgs_s_16={c16:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
