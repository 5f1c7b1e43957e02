"""The split on a real Redis Cluster: 2 interfaces x 2 workers running an unchanged Channels app."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from channels_fleet.dev.stack import FleetStack, ServiceProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(60)]


class Stack:
    def __init__(self, interfaces: list[ServiceProcess], workers: list[ServiceProcess],
                 redis: RedisCluster) -> None:
        self.interfaces = interfaces
        self.workers = workers
        self.redis = redis


@pytest.fixture(scope="module")
def stack(fleet_factory: FleetStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A real database for the login test: SQLite file, migrated before the workers start.
    fleet_factory.env["SPLIT_DB"] = str(tmp_path_factory.mktemp("db") / "split.sqlite3")
    subprocess.run([sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
                   env=fleet_factory.env, check=True, timeout=120)
    # One of each on asyncio's own loop, the other on uvloop (the default where installed):
    # every test crosses both.
    loops = [{}, {"CHANNELS_FLEET_LOOP": "asyncio"}]
    interfaces = [fleet_factory.interface(wait=False, **env) for env in loops]
    workers = [fleet_factory.worker("--channels", "split-tasks", wait=False, **env)
               for env in loops]
    for proc in interfaces + workers:
        proc.wait_ready()
    redis = RedisCluster.from_url(fleet_factory.env["CHANNELS_FLEET_REDIS_URL"].split(",")[0])
    yield Stack(interfaces, workers, redis)
    redis.close()


def ws(proc: ServiceProcess, path: str, **kwargs: Any) -> Any:
    kwargs.setdefault("origin", proc.origin)
    return connect(proc.url + path, open_timeout=10, **kwargs)


async def whoami(sock: Any) -> dict[str, Any]:
    await sock.send("whoami")
    return json.loads(await sock.recv())


def http_request(proc: ServiceProcess, method: str, path: str, body: bytes | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=20)
    conn.request(method, path, body=body, headers={"Host": "127.0.0.1"})
    return conn, conn.getresponse()


async def test_async_consumer__subprotocol_accept_headers_and_echo(stack: Stack) -> None:
    async with ws(stack.interfaces[0], "/ws/echo/ann/", subprotocols=["chat.v2", "chat.v1"]) as s:
        assert s.subprotocol == "chat.v2"
        assert s.response.headers["x-fleet-test"] == "yes"
        await s.send("hello")
        assert await s.recv() == "hello"
        await s.send(b"\x00\x01binary")
        assert await s.recv() == b"\x00\x01binary"


async def test_scope__url_kwargs_auth_user_and_fleet_marker(stack: Stack) -> None:
    async with ws(stack.interfaces[1], "/ws/echo/bob/") as s:
        info = await whoami(s)
    assert info["kwargs"] == {"name": "bob"}
    assert info["user"] == "AnonymousUser"  # AuthMiddlewareStack ran on the worker
    assert info["fleet"]["rehomed"] == 0
    assert info["fleet"]["interface"].startswith("fleet.iface.")
    assert info["worker"] in {w.pid for w in stack.workers}


async def test_auth_middleware__session_and_user_from_relayed_cookies(stack: Stack) -> None:
    conn, resp = http_request(stack.interfaces[0], "GET", "/login/?name=carol")
    assert resp.status == 200
    cookie = resp.getheader("set-cookie").split(";", 1)[0]
    conn.close()
    # Log in through one interface, connect through the other: the worker reads the cookie.
    async with ws(stack.interfaces[1], "/ws/echo/c/", additional_headers={"Cookie": cookie}) as s:
        assert (await whoami(s))["user"] == "carol"


async def test_sync_consumer(stack: Stack) -> None:
    async with ws(stack.interfaces[0], "/ws/sync/") as s:
        for i in range(5):
            await s.send(str(i))
            assert await s.recv() == f"sync:{i}"


async def test_json_consumer(stack: Stack) -> None:
    async with ws(stack.interfaces[1], "/ws/json/") as s:
        await s.send(json.dumps({"n": [1, 2]}))
        assert json.loads(await s.recv()) == {"echo": {"n": [1, 2]}, "kind": "json"}


async def test_custom_close_code_and_reason(stack: Stack) -> None:
    async with ws(stack.interfaces[0], "/ws/close/4321/") as s:
        await s.send("close me")
        with pytest.raises(ConnectionClosed) as info:
            await s.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4321, "bye now")


async def test_app_refusing_the_connection__http_403(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with ws(stack.interfaces[0], "/ws/refuse/"):
            pass
    assert info.value.response.status_code == 403


async def test_app_crashing_before_accept__http_500_as_under_daphne(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with ws(stack.interfaces[1], "/ws/crash-connect/"):
            pass
    assert info.value.response.status_code == 500
    assert b"Traceback" not in (info.value.response.body or b"")
    async with ws(stack.interfaces[1], "/ws/echo/after/") as s:  # the worker carries on
        await s.send("ok")
        assert await s.recv() == "ok"


async def test_foreign_origin__refused_at_the_edge_403(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with ws(stack.interfaces[0], "/ws/echo/x/", origin="http://evil.example"):
            pass
    assert info.value.response.status_code == 403


def test_django_view_over_the_relay(stack: Stack) -> None:
    conn, resp = http_request(stack.interfaces[0], "GET", "/hello/?name=fleet")
    assert (resp.status, resp.read()) == (200, b"hello fleet")
    conn.close()


def test_streaming_http_response__chunks_arrive_as_sent(stack: Stack) -> None:
    conn, resp = http_request(stack.interfaces[1], "GET", "/stream/")
    assert resp.status == 200
    first = resp.readline()
    started = time.monotonic()
    rest = resp.read()
    conn.close()
    assert first == b"chunk 0\n"
    assert rest == b"".join(f"chunk {i}\n".encode() for i in range(1, 5)) + b"done\n"
    # The consumer sleeps 50 ms between chunks: the first line came before the last was made.
    assert time.monotonic() - started > 0.1


def test_django_streaming_response(stack: Stack) -> None:
    conn, resp = http_request(stack.interfaces[0], "GET", "/djstream/")
    assert resp.read() == b"".join(f"line {i}\n".encode() for i in range(5))
    conn.close()


def test_request_body_over_1mb(stack: Stack) -> None:
    body = os.urandom(2 * 1024 * 1024 + 17)  # under Django's 2.5 MB default limit
    conn, resp = http_request(stack.interfaces[1], "POST", "/upload/", body)
    assert resp.status == 200
    assert resp.read().decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    conn.close()


async def test_group_broadcast_crosses_interfaces_and_workers(stack: Stack) -> None:
    room = f"r{time.monotonic_ns()}"
    members: list[tuple[Any, int, int]] = []  # (socket, interface index, worker pid)
    try:
        # Join until the room has members on both interfaces x both workers.
        while len({(i, pid) for _, i, pid in members}) < 4:
            assert len(members) < 60, "connections never spread over both workers"
            i = (len(members) // 2) % 2  # workers take turns: do not walk in step with them
            sock = await ws(stack.interfaces[i], f"/ws/room/{room}/").__aenter__()
            members.append((sock, i, (await whoami(sock))["worker"]))
        await members[0][0].send("to everyone")
        got = await asyncio.gather(*(asyncio.wait_for(s.recv(), 5) for s, _, _ in members))
        assert got == ["to everyone"] * len(members)
    finally:
        for sock, _, _ in members:
            await sock.close()


async def test_order_per_connection__50_concurrent_clients(stack: Stack) -> None:
    async def client(n: int) -> list[str]:
        async with ws(stack.interfaces[n % 2], "/ws/echo/o/") as s:
            for i in range(100):
                await s.send(f"{n}:{i}")  # pipelined: no waiting for replies
            return [await asyncio.wait_for(s.recv(), 10) for _ in range(100)]

    results = await asyncio.gather(*(client(n) for n in range(50)))
    for n, got in enumerate(results):
        assert got == [f"{n}:{i}" for i in range(100)]


async def test_frames_of_every_length_encoding_arrive_whole(stack: Stack) -> None:
    """The interface writes frames itself (edge.write_message): 7-bit, 16-bit and 64-bit
    lengths, text (UTF-8) and binary, as the app sent them."""
    async with ws(stack.interfaces[0], "/ws/echo/len/", max_size=None) as s:
        for size in (1, 125, 126, 65535, 65536, 1_000_000):  # Daphne takes up to 1 MiB
            text = "a" * size
            await s.send(text)
            assert await asyncio.wait_for(s.recv(), 10) == text
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            await s.send(data)
            assert await asyncio.wait_for(s.recv(), 10) == data
        text = "é€" * 100_000  # multi-byte UTF-8: the frame length counts bytes
        await s.send(text)
        assert await asyncio.wait_for(s.recv(), 10) == text


async def test_client_reading_late__frames_queued_behind_a_full_socket_keep_their_order(
        stack: Stack, fleet_factory: FleetStack) -> None:
    """Frames the kernel does not take wait in Twisted's buffer; later frames queue behind
    them (not written past them), and direct writes resume once it has drained.

    The client's receive buffer is pinned small and the burst (8 MB) is larger than the
    kernel's send buffer can grow (tcp_wmem max, 4 MB here), so writes go partial; this
    interface's send buffer is raised so that is not taken for a slow reader.
    """
    iface = fleet_factory.interface(CHANNELS_FLEET_SEND_BUFFER=str(64 * 1024 * 1024))
    sock = socket.create_connection(("127.0.0.1", iface.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    async with ws(iface, "/ws/echo/late/", max_size=None, max_queue=1, sock=sock) as s:
        await s.send("burst:128:65536")
        await asyncio.sleep(1.0)  # not reading meanwhile
        got = [await asyncio.wait_for(s.recv(), 10) for _ in range(128)]
        assert [g[:4] for g in got] == [b"%04d" % i for i in range(128)]
        assert all(len(g) == 65536 for g in got)
        await s.send("after")
        assert await asyncio.wait_for(s.recv(), 10) == "after"
    iface.stop()


async def test_sockets_that_connected_together_are_not_pinged_together(
        stack: Stack, fleet_factory: FleetStack) -> None:
    """Each socket is pinged at its own point of the ping interval (server_costs.PingPhase):
    40 sockets opened at once, each sending its first message at once (as reconnecting
    clients do), are pinged over several of Daphne's 2 s checker ticks, not in one burst
    (Daphne pings a socket an interval after its last message: all 40 within one or two
    ticks)."""
    iface = fleet_factory.interface(CHANNELS_FLEET_PING_INTERVAL="6")

    async def first_ping() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", iface.port)
        try:
            writer.write((
                f"GET /ws/echo/ping/ HTTP/1.1\r\nHost: 127.0.0.1:{iface.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: {iface.origin}\r\n\r\n").encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 101"), head
            mask = os.urandom(4)
            writer.write(bytes([0x81, 0x80 | 5]) + mask
                         + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello")))
            while True:  # server frames are unmasked: opcode, 7-bit length (pings are short)
                first, length = await asyncio.wait_for(reader.readexactly(2), 15)
                await reader.readexactly(length & 0x7F)
                if first & 0x0F == 0x9:
                    return time.monotonic()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    pinged = sorted(await asyncio.gather(*(first_ping() for _ in range(40))))
    # Spread over the 6 s interval the pings land on three or four checker ticks 2 s apart
    # (without it: one, or two when the handshakes straddle a tick).
    assert pinged[-1] - pinged[0] > 3.5, [round(t - pinged[0], 2) for t in pinged]
    iface.stop()


async def test_client_address_and_scheme_from_a_trusted_proxy_only(
        stack: Stack, fleet_factory: FleetStack) -> None:
    """Behind a trusted proxy (CHANNELS_FLEET_FORWARDED_ALLOW_IPS) the app sees the client's
    address and scheme from X-Forwarded-For / -Proto, in Django's request and in a consumer's
    scope; an untrusted peer's headers change nothing."""
    proxied = fleet_factory.interface(CHANNELS_FLEET_FORWARDED_ALLOW_IPS="127.0.0.0/8")
    forwarded = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 127.0.0.1",
                 "X-Forwarded-Proto": "https"}

    def whereami(proc: ServiceProcess, headers: dict[str, str]) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=20)
        try:
            conn.request("GET", "/whereami/", headers={"Host": "127.0.0.1", **headers})
            response = conn.getresponse()
            assert response.status == 200
            return response.read().decode()
        finally:
            conn.close()

    # The nearest hop the trusted proxies did not add is the client (198.51.100.7 could be
    # anything the client wrote itself).
    assert whereami(proxied, forwarded) == "203.0.113.9 True"
    assert whereami(proxied, {}) == "127.0.0.1 False"
    assert whereami(stack.interfaces[0], forwarded) == "127.0.0.1 False"
    async with ws(proxied, "/ws/echo/proxied/", additional_headers=forwarded) as s:
        me = await whoami(s)
    assert (me["client"], me["scheme"]) == (["203.0.113.9", 0], "wss")
    async with ws(stack.interfaces[0], "/ws/echo/direct/", additional_headers=forwarded) as s:
        me = await whoami(s)
    assert me["client"][0] == "127.0.0.1"
    assert me["scheme"] in (None, "ws")  # Daphne leaves it out of a WebSocket scope: "ws"
    proxied.stop()


async def test_two_fleets_on_one_redis_keep_to_their_own(
        stack: Stack, fleet_factory: FleetStack) -> None:
    """CHANNELS_FLEET_KEY_PREFIX: a second fleet on the same Redis Cluster serves only its own
    connections, and the first fleet's workers never take the second's."""
    iface, (worker,) = fleet_factory.start(workers=1, CHANNELS_FLEET_KEY_PREFIX="fleet-b",
                                           CHANNELS_FLEET_CLAIM_TIMEOUT="3")
    ours = {w.pid for w in stack.workers}
    for _ in range(10):
        async with ws(iface, "/ws/echo/b/") as s:
            assert (await whoami(s))["worker"] == worker.pid
        async with ws(stack.interfaces[0], "/ws/echo/a/") as s:
            assert (await whoami(s))["worker"] in ours
    # Without its own worker, fleet b's connection waits in its own queue, untouched by the
    # first fleet's two idle workers, and is refused at the claim deadline.
    worker.stop()
    refused = asyncio.ensure_future(ws(iface, "/ws/echo/orphan/").__aenter__())
    deadline = time.monotonic() + 2
    while stack.redis.llen("fleet-b:q:{fleet.connect}") != 1:
        assert time.monotonic() < deadline, "the envelope never reached fleet b's queue"
        await asyncio.sleep(0.05)
    orphan = await asyncio.wait_for(refused, 10)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(orphan.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    await orphan.close()
    iface.stop()


async def test_background_channel_via_channel_name_router(stack: Stack) -> None:
    from channels_fleet.layers import RedisClusterChannelLayer

    stack.redis.delete("split:tasks")
    layer = RedisClusterChannelLayer(
        hosts=[f"redis://{n.host}:{n.port}" for n in stack.redis.get_primaries()],
        prefix="splitproj",
    )
    await layer.send("split-tasks", {"type": "task.record", "value": "ran"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not stack.redis.lrange("split:tasks", 0, -1):
        await asyncio.sleep(0.05)
    assert stack.redis.lrange("split:tasks", 0, -1) == [b"ran"]
    await layer.close_pools()
