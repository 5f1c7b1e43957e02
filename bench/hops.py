"""Benchmark: one crossing of the layer between two processes, against channels_redis, same run.

The split's echo crosses Redis twice (interface -> worker -> interface) where the monolith
crosses nothing; this measures what two crossings cost by themselves, without Daphne or a
consumer. A pinger sends to a channel an echoer process receives on, and waits for the reply
on its own process-local channel: one round trip is two crossings, each a push, a pop, and a
sleeping process woken. Paced (``--rate`` round trips a second), as the split's latency phase
is, so each crossing finds its receiver asleep.

Each round runs, for our layer and for channels_redis on the same local Redis:

- ``rtt``: the round trip, p50;
- ``send``: the pinger's ``send`` alone, in that round trip (the push's reply; Redis serves
  the echoer's waiting pop in the same turn);
- once with the processes free to use every core, and once all of them (Redis, pinger,
  echoer) on one CPU (the first this process may use), where a wake-up is a context switch
  rather than a wake of an idle core;
- the floor: the same paced round trip over one bare TCP socket between two processes.

Prints one line, then the absolute figures (ms):

    hops: rtt_ratio=X one_cpu_rtt_ratio=X rtt_ms=X one_cpu_rtt_ms=X tcp_rtt_ms=X loop=L

Run with ``make bench-hops``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from split import fleet_layer, redis_layer

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.ports import free_ports
from channels_fleet.services import eventloop
from channels_fleet.settings import EVENT_LOOPS

LAYERS = {"ours": fleet_layer, "channels_redis": redis_layer}
ECHO = "hops.echo"
WARMUP = 50


def echoer(kind: str, url: str, loop: str) -> None:
    """Receive on ECHO, send each message back to its ``reply`` channel, forever."""
    eventloop.use(loop)

    async def serve() -> None:
        layer = LAYERS[kind](url)
        while True:
            message = await layer.receive(ECHO)
            await layer.send(message["reply"], message)

    asyncio.run(serve())


async def ping(kind: str, url: str, count: int, rate: float) -> dict[str, float]:
    layer = LAYERS[kind](url)
    reply = await layer.new_channel()
    rtts: list[float] = []
    sends: list[float] = []
    for i in range(WARMUP + count):
        start = time.perf_counter()
        await layer.send(ECHO, {"type": "hop", "reply": reply, "text": "x" * 32})
        sent = time.perf_counter()
        await layer.receive(reply)
        if i >= WARMUP:
            rtts.append(time.perf_counter() - start)
            sends.append(sent - start)
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)))
    return {"rtt_ms": p50(rtts), "rtt_p99_ms": p99(rtts), "send_ms": p50(sends)}


def tcp_echoer(port: int) -> None:
    with socket.create_server(("127.0.0.1", port)) as server:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(256):
            conn.sendall(data)


def tcp_ping(port: int, count: int, rate: float) -> dict[str, float]:
    rtts: list[float] = []
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(WARMUP + count):
            start = time.perf_counter()
            conn.sendall(b"x" * 32)
            conn.recv(256)
            if i >= WARMUP:
                rtts.append(time.perf_counter() - start)
            time.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)))
    return {"rtt_ms": p50(rtts), "rtt_p99_ms": p99(rtts)}


def p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)] * 1000


@contextmanager
def running(target: Any, *args: Any) -> Iterator[None]:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    try:
        yield
    finally:
        process.kill()
        process.join()


@contextmanager
def cpus(only: set[int]) -> Iterator[None]:
    """This process, and what it starts meanwhile, on the CPUs ``only``."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, only)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def one_round(args: argparse.Namespace, loop: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    (port,) = free_ports(1)
    with running(tcp_echoer, port):
        time.sleep(0.3)
        figures["tcp"] = tcp_ping(port, args.count, args.rate)
    redis = LocalRedis(Path(tempfile.mkdtemp(prefix="bench-hops-")) / "redis", masters=1,
                       replicas=0).start()
    url = redis.urls[0]
    try:
        for kind in LAYERS:
            with running(echoer, kind, url, loop):
                time.sleep(1.0)  # its import and first receive
                figures[kind] = asyncio.run(ping(kind, url, args.count, args.rate))
    finally:
        redis.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/hops.py", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="round trips per measurement")
    parser.add_argument("--rate", type=float, default=200.0, help="round trips a second")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--loop", choices=EVENT_LOOPS, default="auto",
                        help="event loop, as CHANNELS_FLEET_LOOP (auto: uvloop where installed)")
    args = parser.parse_args(argv)
    loop = eventloop.use(args.loop)
    every = os.sched_getaffinity(0)
    rounds: dict[str, list[dict[str, Any]]] = {"spread": [], "one_cpu": []}
    for _ in range(args.rounds):
        for name, only in (("spread", every), ("one_cpu", {min(every)})):
            with cpus(only):
                rounds[name].append(one_round(args, args.loop))
    result: dict[str, Any] = {"loop": loop, "cpus": len(every)}
    for name, runs in rounds.items():
        result[name] = {who: {k: statistics.median(r[who][k] for r in runs) for k in runs[0][who]}
                        for who in runs[0]}
    spread, one = result["spread"], result["one_cpu"]
    print(f"hops: rtt_ratio={spread['ours']['rtt_ms'] / spread['channels_redis']['rtt_ms']:.2f} "
          f"one_cpu_rtt_ratio={one['ours']['rtt_ms'] / one['channels_redis']['rtt_ms']:.2f} "
          f"rtt_ms={spread['ours']['rtt_ms']:.3f} one_cpu_rtt_ms={one['ours']['rtt_ms']:.3f} "
          f"tcp_rtt_ms={spread['tcp']['rtt_ms']:.3f} loop={loop}")
    print(json.dumps({**result, "load_average": os.getloadavg()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
