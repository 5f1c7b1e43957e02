"""The images run as the stack: the generic interface image, and the demo chat project's image
(built on the project base) as worker and as web, each container on the host network with a
read-only root, as UID 10001 with no capabilities, on the real Redis Cluster. A real WebSocket
client talks to the chat consumer through them; SIGTERM goes through tini (PID 1) and drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import websockets
from fleet_podman import IMAGES, Service, http_get
from redis.asyncio.cluster import RedisCluster

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.ports import free_ports
from channels_fleet.layers.keys import group_key

# The first test also waits for the session's (incremental) image build; every step inside a
# test has its own short timeout.
pytestmark = [
    pytest.mark.usefixtures("images"), pytest.mark.cluster, pytest.mark.slow,
    pytest.mark.timeout(600),
]

# Services drain within CHANNELS_FLEET_DRAIN_TIMEOUT=10 s here; podman stop waits 30 s before
# SIGKILL. Under that, and exit code 0, means SIGTERM went through tini to the service.
STOP_LIMIT = 20

# Seconds from `podman run` to /readyz 200, per service; printed at the end of the session.
START_TIMES: dict[str, list[float]] = {}


class Stack:
    """An interface and a chat worker container (and a web one on demand), removed at teardown."""

    def __init__(self, redis_url: str) -> None:
        self.port, self.web_port, *metrics = free_ports(5)
        self.metrics = dict(zip(("interface", "worker", "web"), metrics, strict=True))
        self.env = {"CHANNELS_FLEET_REDIS_URL": redis_url, "CHANNELS_FLEET_DRAIN_TIMEOUT": "10",
                    "CHAT_GUEST_POSTS": "1"}
        self.services: dict[str, Service] = {}
        self.started_in: dict[str, float] = {}

    def start(self, *names: str) -> Stack:
        args = {
            "interface": ["interface", f"--port={self.port}"],
            "worker": ["worker", "chat_project.asgi:application"],
            "web": ["web", "chat_project.wsgi:application", f"--port={self.web_port}",
                    "--workers=2"],
        }
        for name in names:
            image = IMAGES["interface" if name == "interface" else "chat"]
            self.services[name] = Service(
                image, [*args[name], f"--metrics-port={self.metrics[name]}"], env=self.env
            ).start()
        for name in names:
            self.started_in[name] = self.services[name].wait_ready(self.metrics[name])
            START_TIMES.setdefault(name, []).append(self.started_in[name])
        return self

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def remove(self) -> None:
        for service in self.services.values():
            service.remove()

    def connect(self, room: str) -> websockets.connect:
        return websockets.connect(
            f"ws://127.0.0.1:{self.port}/ws/chat/{room}/",
            origin=f"http://127.0.0.1:{self.port}", open_timeout=20,
        )


@pytest.fixture
def stack(redis_cluster: LocalRedis) -> Iterator[Stack]:
    stack = Stack(",".join(redis_cluster.urls[:3]))
    try:
        yield stack.start("worker", "interface")
    finally:
        stack.remove()


async def receive(ws: websockets.ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


async def close_code(ws: websockets.ClientConnection, timeout: float = 30) -> int | None:
    """Wait for the server to close ``ws``; the close code the client received."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


@contextlib.asynccontextmanager
async def joined(
    stack: Stack, room: str, count: int
) -> AsyncIterator[list[websockets.ClientConnection]]:
    """``count`` clients in ``room``, each seen to be in the group (a message reaches them all);
    closed on the way out."""
    async with contextlib.AsyncExitStack() as exits:
        clients = [await exits.enter_async_context(stack.connect(room)) for _ in range(count)]
        await clients[0].send(json.dumps({"message": "hello"}))
        for ws in clients:
            assert await receive(ws) == {"message": "hello", "user": "guest"}
        yield clients


async def test_chat_through_interface_and_worker_containers(stack: Stack) -> None:
    async with joined(stack, "lobby", 2) as (alice, bob):
        for i in range(20):
            await alice.send(json.dumps({"message": f"a{i}"}))
            await bob.send(json.dumps({"message": f"b{i}"}))
        for ws in (alice, bob):
            got = [(await receive(ws))["message"] for _ in range(40)]
            # Each sender's messages in the order it sent them (no order across two sockets).
            for sender in "ab":
                assert [m for m in got if m[0] == sender] == [f"{sender}{i}" for i in range(20)]
        status, metrics = http_get(stack.metrics["interface"], "/metrics")
        assert status == 200
        assert 'channels_fleet_open_connections{protocol="websocket"} 2.0' in metrics
        status, metrics = http_get(stack.metrics["worker"], "/metrics")
        assert status == 200 and "channels_fleet_owned_connections 2.0" in metrics


async def group_size(stack: Stack, room: str) -> int:
    """Members of the chat room's group in Redis (the layer's ZSET, prefix ``chat``)."""
    client = RedisCluster.from_url(stack.env["CHANNELS_FLEET_REDIS_URL"].split(",")[0])
    try:
        return await client.zcard(group_key("chat", f"chat_{room}"))
    finally:
        await client.aclose()


async def test_sigterm_drains_the_interface_through_tini(stack: Stack) -> None:
    """`podman stop` signals PID 1 (tini); the interface closes every socket with 1001 and tells
    the worker, whose consumers' disconnect handlers leave the group."""
    async with joined(stack, "drain", 3) as clients:
        assert await group_size(stack, "drain") == 3
        codes = [asyncio.ensure_future(close_code(ws)) for ws in clients]
        stopped = await asyncio.to_thread(stack["interface"].stop, 30)
        assert await asyncio.gather(*codes) == [1001, 1001, 1001]
    assert stack["interface"].exit_code() == 0
    logs = stack["interface"].logs()
    assert stopped < STOP_LIMIT, f"stop took {stopped:.1f}s:\n{logs[-3000:]}"
    for _ in range(50):
        if await group_size(stack, "drain") == 0:
            break
        await asyncio.sleep(0.1)
    assert await group_size(stack, "drain") == 0, "disconnect handlers did not run"


async def test_sigterm_drains_the_worker_through_tini(stack: Stack) -> None:
    """A stopping worker hands its sockets back; with no other worker to take them, the client
    is told to reconnect (1012) and the consumer's disconnect handler has run."""
    async with joined(stack, "worker-drain", 1) as (ws,):
        assert await group_size(stack, "worker-drain") == 1
        code = asyncio.ensure_future(close_code(ws))
        stopped = await asyncio.to_thread(stack["worker"].stop, 30)
        assert await code == 1012
    assert stack["worker"].exit_code() == 0
    logs = stack["worker"].logs()
    assert stopped < STOP_LIMIT, f"stop took {stopped:.1f}s:\n{logs[-3000:]}"
    # The old instance's disconnect kept the socket's channel in its groups (it was moving);
    # the interface leaves them once the socket is closed for good (no worker took it).
    deadline = time.monotonic() + 5
    while await group_size(stack, "worker-drain") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await group_size(stack, "worker-drain") == 0, "the socket's groups were not left"


def test_web_container_serves_the_project_and_stops_cleanly(redis_cluster: LocalRedis) -> None:
    stack = Stack(",".join(redis_cluster.urls[:3]))
    try:
        stack.start("web")
        status, page = http_get(stack.web_port, "/")
        assert status == 200 and "<title>Chat - channels-fleet demo</title>" in page
        assert http_get(stack.web_port, "/chat/lobby/")[0] == 200
        assert http_get(stack.web_port, "/no-such-page/")[0] == 404
        status, metrics = http_get(stack.metrics["web"], "/metrics")
        assert status == 200 and "channels_fleet" in metrics
        # gunicorn under tini: SIGTERM stops the master, its workers and the probe process.
        t0 = time.monotonic()
        stack["web"].stop(30)
        assert time.monotonic() - t0 < STOP_LIMIT
        assert stack["web"].exit_code() == 0
    finally:
        stack.remove()
