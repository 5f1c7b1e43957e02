"""What the app sends is checked as Daphne checks it: ``send()`` raises, nothing invalid goes out.

Real processes on the real Redis Cluster: an interface, a worker, and (for comparison) a plain
Daphne serving the same project. The test project's ``BadHttpConsumer`` /
``BadWebsocketConsumer`` send each case's messages, record the type of what their ``send()``
raised, and re-raise it; a valid phase would relay "hello world" afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from channels_fleet.dev.ports import free_ports
from channels_fleet.dev.stack import FleetStack, ServiceProcess
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.relay import wire

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(90)]

_tags = itertools.count()

#: case -> (what the worker's send() raises, what the client gets). "cut": the status had gone
#: out to the interface already, so the response is cut (the client reads no response at all).
HTTP_CASES = {
    "nostatus": ("ValueError", 500),
    "strstatus": ("TypeError", 500),
    "strheader": ("ValueError", 500),
    "boolheader": ("ValueError", 500),
    "headerpair": ("ValueError", 500),
    "bodyfirst": ("ValueError", 500),
    "twostart": ("ValueError", "cut"),
    "strbody": ("TypeError", "cut"),
    "trailers": ("ValueError", 500),
    "notype": ("KeyError", 500),
}
#: case -> (what send() raises, the client's handshake status or close code).
WS_CASES = {
    "send-before": ("ValueError", "HTTP 500"),
    "http-start": ("ValueError", "HTTP 500"),
    "accept-twice": ("ValueError", 1011),
    "both": ("ValueError", 1011),
    "text-bytes": ("TypeError", 1011),
    "close-str": ("TypeError", 1011),
    "unknown": ("ValueError", 1011),
}
#: Cases where Daphne's own send() raises on purpose (not by accident: an AttributeError on a
#: second accept, or nothing at all for a string status): the same type must be raised.
DAPHNE_HTTP = [c for c in HTTP_CASES if c != "strstatus"]
DAPHNE_WS = ["send-before", "both"]


class Servers:
    def __init__(self, iface: ServiceProcess, worker: ServiceProcess, daphne_port: int,
                 redis: RedisCluster) -> None:
        self.iface, self.worker, self.daphne_port, self.redis = iface, worker, daphne_port, redis


@pytest.fixture(scope="module")
def servers(fleet_factory: FleetStack) -> Iterator[Servers]:
    (port,) = free_ports(1)
    fleet_factory.spawn("daphne", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p",
                                   str(port), "splitproject.asgi:application"], port=port)
    iface, (worker,) = fleet_factory.start(workers=1)
    wait_port(port)
    redis = RedisCluster.from_url(fleet_factory.env["CHANNELS_FLEET_REDIS_URL"].split(",")[0])
    yield Servers(iface, worker, port, redis)
    redis.close()


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def recorded(redis: RedisCluster, tag: str, timeout: float = 10) -> str:
    """What the consumer's send() raised ("ok": nothing), once it recorded it."""
    deadline = time.monotonic() + timeout
    while True:
        got = redis.lrange(f"split:bad:{tag}", 0, -1)
        if got or time.monotonic() > deadline:
            return ",".join(v.decode() for v in got)
        time.sleep(0.05)


def http_get(port: int, path: str, timeout: float = 20) -> tuple[Any, bytes]:
    """(status or "cut", body) of a GET; "no answer" after ``timeout``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "127.0.0.1"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionError):
        return "cut", b""
    except TimeoutError:
        return "no answer", b""
    finally:
        conn.close()


async def ws_outcome(port: int, path: str) -> Any:
    """The handshake's refusal ("HTTP 500"), the close code, or the first frame received."""
    try:
        async with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10,
                           origin=f"http://127.0.0.1:{port}") as sock:
            try:
                return await asyncio.wait_for(sock.recv(), 10)
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else "no close frame"
    except InvalidStatus as exc:
        return f"HTTP {exc.response.status_code}"


def log_lines(proc: ServiceProcess, needle: str) -> list[str]:
    return [line for line in proc.log.read_text(errors="replace").splitlines() if needle in line]


@pytest.mark.parametrize("case", HTTP_CASES)
def test_invalid_http_message__send_raises_client_gets_500_one_log_line(
        servers: Servers, case: str) -> None:
    raised, answer = HTTP_CASES[case]
    tag = f"http-{case}-{next(_tags)}"
    status, body = http_get(servers.iface.port, f"/bad/{case}/?{tag}")
    assert (status, recorded(servers.redis, tag)) == (answer, raised)
    assert b"hello world" not in body
    if status == 500:
        assert body == b"Server Error\n"  # no detail
    time.sleep(0.3)  # the log line is written before the client's answer is relayed
    lines = log_lines(servers.worker, f"/bad/{case}/")
    assert len(lines) == 1, lines
    assert "splitproject.consumers.BadHttpConsumer sent an invalid message on" in lines[0]
    assert f": {raised}: " in lines[0]
    assert "Traceback" not in servers.worker.log.read_text()


@pytest.mark.parametrize("case", WS_CASES)
async def test_invalid_websocket_message__send_raises_client_gets_1011_or_500(
        servers: Servers, case: str) -> None:
    raised, answer = WS_CASES[case]
    tag = f"ws-{case}-{next(_tags)}"
    outcome = await ws_outcome(servers.iface.port, f"/ws/bad/{case}/?{tag}")
    assert (outcome, recorded(servers.redis, tag)) == (answer, raised)
    await asyncio.sleep(0.3)
    lines = log_lines(servers.worker, f"/ws/bad/{case}/")
    assert len(lines) == 1, lines
    assert "splitproject.consumers.BadWebsocketConsumer sent an invalid message" in lines[0]


async def test_invalid_message_from_a_sync_consumer__named_in_the_log(servers: Servers) -> None:
    assert await ws_outcome(servers.iface.port, "/ws/bad/sync/") == 1011
    await asyncio.sleep(0.3)
    lines = log_lines(servers.worker, "/ws/bad/sync/")
    assert len(lines) == 1, lines
    assert ("splitproject.consumers.BadSyncWebsocketConsumer sent an invalid message" in lines[0]
            and "TypeError: text must be a str, not int" in lines[0])


@pytest.mark.parametrize("case", DAPHNE_HTTP)
def test_same_exception_type_as_daphne__http(servers: Servers, case: str) -> None:
    tag = f"daphne-http-{case}-{next(_tags)}"
    http_get(servers.daphne_port, f"/bad/{case}/?{tag}", timeout=2)  # some never answer
    assert recorded(servers.redis, tag) == HTTP_CASES[case][0]


@pytest.mark.parametrize("case", DAPHNE_WS)
async def test_same_exception_type_as_daphne__websocket(servers: Servers, case: str) -> None:
    tag = f"daphne-ws-{case}-{next(_tags)}"
    # Daphne may never answer: an app's crash after a refused status stops its application
    # checker (handle_exception's 500 raises "already started"), which answers later crashes.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ws_outcome(servers.daphne_port, f"/ws/bad/{case}/?{tag}"), 3)
    assert recorded(servers.redis, tag) == WS_CASES[case][0]


def test_messages_after_the_end__dropped_not_raised_as_daphne(servers: Servers) -> None:
    for port in (servers.iface.port, servers.daphne_port):
        tag = f"afterend-{next(_tags)}"
        assert http_get(port, f"/bad/afterend/?{tag}") == (200, b"the end")
        assert recorded(servers.redis, tag) == "ok"


# -- the interface: a worker that does not check (an older one, or anything posting on the
# relay) gets its refused message's connection ended, not the rest written. The test is that
# worker: it claims the interface's envelopes (its own key prefix) and relays what it likes.

FAKE_PREFIX = "fleetfake"


@pytest.fixture(scope="module")
def lone_iface(fleet_factory: FleetStack) -> ServiceProcess:
    return fleet_factory.interface(CHANNELS_FLEET_KEY_PREFIX=FAKE_PREFIX)


class FakeWorker:
    def __init__(self, urls: list[str], redis: RedisCluster) -> None:
        self.layer = RedisClusterChannelLayer(hosts=urls, prefix=FAKE_PREFIX, receive_prefetch=0)
        self.redis = redis
        self.channel = ""

    async def __aenter__(self) -> FakeWorker:
        self.channel = await self.layer.new_channel(wire.WORKER_CHANNELS)
        # Alive for the interface's liveness checks.
        self.redis.set(wire.heartbeat_key(self.channel, FAKE_PREFIX), b"1", px=60_000)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.layer.close()

    async def take(self) -> dict[str, Any]:
        return dict(await asyncio.wait_for(self.layer.receive(wire.CONNECT_QUEUE), 20))

    async def relay(self, envelope: dict[str, Any], *messages: dict[str, Any]) -> None:
        items = [[wire.CLAIM, envelope["conn"], self.channel]]
        items += [[wire.SEND, envelope["conn"], message] for message in messages]
        await self.layer.send(envelope["iface"], wire.batch(items, self.channel))

    async def told(self, conn: str) -> list[Any]:
        """The items the interface sent back about ``conn`` (within 5 s)."""
        got: list[Any] = []
        with contextlib.suppress(TimeoutError):
            while True:
                batch = await asyncio.wait_for(self.layer.receive(self.channel), 5)
                got += [item[0::2] for item in batch["items"] if item[1] == conn]
                if any(kind == wire.GONE or kind == wire.EVENT for kind, _ in got):
                    return got
        return got


@pytest.fixture
async def fake_worker(fleet_factory: FleetStack, servers: Servers) -> Any:
    async with FakeWorker(fleet_factory.env["CHANNELS_FLEET_REDIS_URL"].split(","),
                          servers.redis) as worker:
        yield worker


async def test_interface__daphne_refuses_a_relayed_start__500_and_the_owner_told(
        lone_iface: ServiceProcess, fake_worker: FakeWorker) -> None:
    answer = asyncio.create_task(asyncio.to_thread(http_raw, lone_iface.port, "/refused/"))
    envelope = await fake_worker.take()
    await fake_worker.relay(envelope, {"type": "http.response.start"},
                            {"type": "http.response.body", "body": b"hello world"})
    response = await answer
    assert response.startswith(b"HTTP/1.1 500 Internal Server Error\r\n"), response
    assert b"\r\nServer Error\n\r\n" in response and b"hello" not in response  # chunked
    assert [wire.GONE, 1011] in await fake_worker.told(envelope["conn"])
    lines = log_lines(lone_iface, "/refused/")
    assert len(lines) == 1 and "the server refused the app's http.response.start" in lines[0]


async def test_interface__daphne_refuses_a_relayed_frame__1011_nothing_more_written(
        lone_iface: ServiceProcess, fake_worker: FakeWorker) -> None:
    opening = asyncio.ensure_future(
        connect(f"ws://127.0.0.1:{lone_iface.port}/ws/refused/", open_timeout=20))
    envelope = await fake_worker.take()
    await fake_worker.relay(envelope, {"type": "websocket.accept"},
                            {"type": "websocket.send", "text": "x", "bytes": b"y"},
                            {"type": "websocket.send", "text": "hello world"})
    async with await opening as sock:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(sock.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert [wire.GONE, 1011] in await fake_worker.told(envelope["conn"])


def http_raw(port: int, path: str) -> bytes:
    """Everything the server wrote for one GET, as bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
