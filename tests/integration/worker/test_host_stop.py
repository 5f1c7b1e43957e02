"""A stopped worker leaves no pop of the work queue behind in Redis.

Its receives on ``fleet.connect`` are cancelled as its drain starts, but a pop already waiting
in Redis (BLMPOP) still took the next envelope, which then died with the process: a socket
re-homed off that very worker, refused 1012 at its claim deadline, since an interface sends an
envelope again only after a worker's death (make e2e-k8s, the worker-loss scenario).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
from channels.generic.websocket import AsyncWebsocketConsumer

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.layers.keys import pack_element
from channels_fleet.relay import wire
from channels_fleet.worker.host import Host
from channels_fleet.worker.settings import WorkerSettings

pytestmark = pytest.mark.timeout(60)


class Echo(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()


async def blocked_clients(client: redis.Redis) -> int:
    return int((await asyncio.to_thread(client.info, "clients"))["blocked_clients"])


async def test_after_stop__an_envelope_sent_to_the_work_queue_stays_for_other_workers(
        tmp_path: Path) -> None:
    server = LocalRedis(tmp_path, masters=1, replicas=0).start()  # its own: nobody else blocks
    client = redis.Redis.from_url(server.urls[0])
    try:
        settings = WorkerSettings(redis_url=tuple(server.urls), app="echo:app")
        host = Host(Echo.as_asgi(), settings)
        await host.start()
        deadline = time.monotonic() + 10
        while await blocked_clients(client) < 2:  # its inbox's pop and the work queue's
            assert time.monotonic() < deadline, "the worker never waited on Redis"
            await asyncio.sleep(0.05)

        await host.stop()

        key = wire.queue_key(settings.key_prefix)
        expires = int((time.time() + 60) * 1000)
        client.rpush(key, pack_element(expires, wire.CONNECT_QUEUE, b"another worker's"))
        # A pop left waiting takes it at once (and, in this process still running, puts it
        # back 0.25 s later: a process that exits does not).
        lengths = []
        for _ in range(50):
            lengths.append(client.llen(key))
            await asyncio.sleep(0.01)
        assert set(lengths) == {1}, f"a stopped worker's pop took the envelope: {lengths}"
        assert await blocked_clients(client) == 0
    finally:
        client.close()
        server.stop()
