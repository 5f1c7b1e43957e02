"""The images run as the stack: interface and worker containers (host network, read-only root,
non-root, no capabilities) on the real Redis Cluster, a real WebSocket client through them, and
SIGTERM through tini (PID 1) draining each service.

The worker runs the split tests' Django project on the *project base image*, its code mounted
read-only at /app: exactly what a project image built on the base holds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import websockets
from fleet_podman import IMAGES, ROOT, Service, http_get

from channels_fleet.devcluster import LocalRedis, free_ports

pytestmark = [pytest.mark.usefixtures("images"), pytest.mark.cluster, pytest.mark.slow]

PROJECT = ROOT / "tests/integration/split/testproject"


class Stack:
    """One interface and one worker container; every container is removed at teardown."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.port, self.interface_metrics, self.worker_metrics = free_ports(3)
        self.services: list[Service] = []
        self.timings: dict[str, float] = {}

    def start(self) -> Stack:
        common = {"CHANNELS_FLEET_REDIS_URL": self.redis_url, "CHANNELS_FLEET_DRAIN_TIMEOUT": "10"}
        self.worker = self._add(Service(
            IMAGES["project"],
            ["worker", "splitproject.asgi:application", f"--metrics-port={self.worker_metrics}"],
            env={**common, "DJANGO_SETTINGS_MODULE": "splitproject.settings", "SPLIT_CLUSTER": "1"},
            volumes=[f"{PROJECT}:/app:ro"],
        ))
        self.interface = self._add(Service(
            IMAGES["interface"],
            ["interface", f"--port={self.port}", f"--metrics-port={self.interface_metrics}"],
            env=common,
        ))
        self.timings["worker"] = self.worker.wait_ready(self.worker_metrics)
        self.timings["interface"] = self.interface.wait_ready(self.interface_metrics)
        return self

    def _add(self, service: Service) -> Service:
        self.services.append(service)
        return service.start()

    def remove(self) -> None:
        for service in self.services:
            service.remove()

    def connect(self, path: str = "/ws/echo/box/") -> websockets.ClientConnection:
        origin = f"http://127.0.0.1:{self.port}"
        return websockets.connect(f"ws://127.0.0.1:{self.port}{path}", origin=origin,
                                  open_timeout=20)


@pytest.fixture
def stack(redis_cluster: LocalRedis) -> Iterator[Stack]:
    stack = Stack(",".join(redis_cluster.urls[:3]))
    try:
        yield stack.start()
    finally:
        stack.remove()


async def close_code(ws: websockets.ClientConnection, timeout: float = 30) -> int | None:
    """Wait for the server to close ``ws``; the close code the client received."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def test_websocket_through_interface_and_worker_containers(stack: Stack) -> None:
    async with stack.connect() as ws:
        for i in range(20):
            await ws.send(f"message {i}")
            assert await asyncio.wait_for(ws.recv(), 10) == f"message {i}"
        await ws.send("whoami")
        who = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert who["kwargs"] == {"name": "box"}
    assert who["fleet"]["interface"].startswith("fleet.iface.")  # relayed, not served in-process
    status, metrics = http_get(stack.interface_metrics, "/metrics")
    assert status == 200 and "channels_fleet_open_connections" in metrics
    status, metrics = http_get(stack.worker_metrics, "/metrics")
    assert status == 200 and "channels_fleet_owned_connections" in metrics


async def test_sigterm_drains_the_interface_through_tini(stack: Stack) -> None:
    """`podman stop` signals PID 1 (tini); the interface closes every socket with 1001."""
    clients = [await stack.connect() for _ in range(3)]
    for ws in clients:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 10) == "hello"
    codes = [asyncio.ensure_future(close_code(ws)) for ws in clients]
    stopped = await asyncio.to_thread(stack.interface.stop, 30)
    assert await asyncio.gather(*codes) == [1001, 1001, 1001]
    assert stack.interface.exit_code() == 0
    assert stopped < 10, f"stop took {stopped:.1f}s: SIGTERM did not reach the service"
    assert "drained: 3 WebSockets closed with 1001" in stack.interface.logs()


async def test_sigterm_drains_the_worker_through_tini(stack: Stack) -> None:
    """A stopping worker releases its sockets with 1012 so clients reconnect elsewhere."""
    async with stack.connect() as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 10) == "hello"
        code = asyncio.ensure_future(close_code(ws))
        t0 = time.monotonic()
        await asyncio.to_thread(stack.worker.stop, 30)
        assert await code == 1012
    assert time.monotonic() - t0 < 10
    assert stack.worker.exit_code() == 0
    assert "drained: 1 sockets released with 1012" in stack.worker.logs()
