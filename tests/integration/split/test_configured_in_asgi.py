"""A project that configures Django in its ASGI module (``settings.configure()`` then
``django.setup()``, no ``DJANGO_SETTINGS_MODULE``) runs on the worker as it runs on Daphne, and
its layers are adopted: its in-memory layer's group spans two worker processes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.split import PROJECT
from websockets.asyncio.client import connect

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.stack import FleetStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture
def stack(redis_cluster: LocalRedis, tmp_path: Path) -> Iterator[FleetStack]:
    assert "DJANGO_SETTINGS_MODULE" not in os.environ
    # The split's own deployment shape, as the other split tests (conftest.py): a Cluster.
    fleet = FleetStack(redis_cluster.urls[:3], tmp_path, project=PROJECT,
                       app="confproject.asgi:application")
    try:
        yield fleet
    finally:
        fleet.stop()


async def test_settings_configure_in_the_asgi_module__served_and_layers_adopted(
        stack: FleetStack) -> None:
    iface, workers = stack.start(workers=2)
    url = f"ws://127.0.0.1:{iface.port}/ws/group/"
    origin = f"http://127.0.0.1:{iface.port}"
    socks: dict[str, Any] = {}
    opened = []
    try:
        # Sockets until two workers serve one each.
        for _ in range(20):
            sock = await connect(url, origin=origin, open_timeout=20)
            opened.append(sock)
            await sock.send("whoami")
            socks.setdefault(await asyncio.wait_for(sock.recv(), 10), sock)
            if len(socks) == 2:
                break
        assert len(socks) == 2, "every socket landed on one worker"
        (pid_a, a), (pid_b, b) = socks.items()
        await a.send("hello")
        # b, on the other worker, hears it: the group is on the Redis Cluster, not in one
        # process's memory.
        assert await asyncio.wait_for(b.recv(), 10) == f"{pid_b}:hello"
    finally:
        for sock in opened:
            await sock.close()
    logs = stack.logs("worker")
    assert logs.count("CHANNEL_LAYERS['default']: channels.layers.InMemoryChannelLayer replaced "
                      "by channels_fleet.layers.RedisClusterChannelLayer") == 2
    assert "a layer was built before adoption" not in logs
