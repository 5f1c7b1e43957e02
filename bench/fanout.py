"""Benchmark: a worker's CPU per consumer when one group message reaches thousands of them.

One process, one real Redis (started here), ``bench/splitbench``'s ``Broadcast`` consumer
(``AsyncWebsocketConsumer``, ``groups = ["bcast"]``, one ``send`` per group message) on our
layer, fed and drained in memory (no sockets, no interface), so the figure is the worker's own
work: layer receive -> Channels dispatch -> handler -> ``send``. Two setups, same run:

- stock: Channels 4 as it ships (``await_many_dispatch`` with a task and ``asyncio.wait`` per
  message, ``aclose_old_connections`` awaited before every handler);
- ours: what ``channels-fleet worker`` installs (``channels_fleet.worker.dispatch``,
  ``channels_fleet.worker.dbcleanup``, the handler-latency histogram).

CPU is the process's (``time.process_time``), so other load on the machine moves it little.
Prints one line, then the figures:

    fanout: cpu_ratio=X ours_us_per_consumer=N stock_us_per_consumer=N

Run with ``make bench-fanout`` (``--consumers``, ``--repeats``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "splitbench"))


async def fan_out(consumers: int, repeats: int) -> list[float]:
    """Start ``consumers`` Broadcast consumers; CPU seconds of each of ``repeats`` group_sends
    until every consumer has sent its frame."""
    import benchproject.asgi as project
    from channels.layers import get_channel_layer

    loop = asyncio.get_running_loop()
    app = project.Broadcast.as_asgi()
    sent = 0
    wanted = consumers  # the accepts first
    done = loop.create_future()

    async def send(message: dict[str, Any]) -> None:
        nonlocal sent
        sent += 1
        if sent == wanted and not done.done():
            done.set_result(None)

    inboxes: list[asyncio.Queue[dict[str, Any]]] = []
    tasks = []
    for _ in range(consumers):
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})
        inboxes.append(inbox)
        scope = {"type": "websocket", "path": "/ws/bcast/", "headers": [], "query_string": b""}
        tasks.append(asyncio.ensure_future(app(scope, inbox.get, send)))
    await asyncio.wait_for(done, 60)
    await asyncio.sleep(0.5)  # group_add done everywhere
    layer = get_channel_layer()
    cpu = []
    for _ in range(repeats):
        sent, done = 0, loop.create_future()
        started = time.process_time()
        await layer.group_send("bcast", {"type": "bench.message", "text": "tick"})
        await asyncio.wait_for(done, 60)
        cpu.append(time.process_time() - started)
        await asyncio.sleep(0.2)
    for inbox in inboxes:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.gather(*tasks, return_exceptions=True)
    await layer.flush()
    return cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/fanout.py")
    parser.add_argument("--consumers", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    from channels_fleet.dev.cluster import LocalRedis

    redis = LocalRedis(Path(tempfile.mkdtemp(prefix="bench-fanout-")) / "redis", masters=1,
                       replicas=0).start()
    os.environ.update(BENCH_REDIS_URL=redis.urls[0], BENCH_LAYER="fleet",
                      DJANGO_SETTINGS_MODULE="benchproject.settings")
    try:
        stock = asyncio.run(fan_out(args.consumers, args.repeats))
        from channels_fleet.observability import consumers as consumer_metrics
        from channels_fleet.worker import dbcleanup, dispatch

        dispatch.install()
        dbcleanup.install()
        consumer_metrics.instrument_consumers()
        ours = asyncio.run(fan_out(args.consumers, args.repeats))
    finally:
        redis.stop()
    per = {name: statistics.median(cpu) / args.consumers * 1e6
           for name, cpu in (("ours", ours), ("stock", stock))}
    print(f"fanout: cpu_ratio={per['ours'] / per['stock']:.2f} "
          f"ours_us_per_consumer={per['ours']:.1f} stock_us_per_consumer={per['stock']:.1f}")
    print(json.dumps({
        "consumers": args.consumers, "repeats": args.repeats,
        "ours_cpu_ms": [round(c * 1000, 1) for c in ours],
        "stock_cpu_ms": [round(c * 1000, 1) for c in stock],
        "load_average": os.getloadavg(),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
