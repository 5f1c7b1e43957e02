"""An interface's drain with resumable sessions (docs/resume-protocol.md §4, `B`): SIGTERM one
interface of two while FleetSocket clients echo through it. Each client gets B, comes back at
once through the load balancer (the draining interface has stopped listening: the other one
takes it) and resumes; nothing is lost or seen twice, either way, and the app sees no
disconnect. A client that keeps its B'd socket open (as browsers do) sees it closed 4001 once
its resume superseded it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid

import pytest
from redis.cluster import RedisCluster
from support.resume_session import ORIGIN, RawSession, plain, records, settled
from support.split import start_resumable as start
from websockets.exceptions import ConnectionClosed

from channels_fleet.dev.stack import FleetStack
from channels_fleet.resume import envelope
from channels_fleet.resume.client import FleetSocket
from channels_fleet.resume.envelope import Back

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CLIENTS = 4


class Balancer:
    """A TCP load balancer in front of the interfaces: each connection goes to the first one
    that accepts it, as a cloud balancer's health checks would route around a draining one."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.routed: list[int] = []  # the interface port of each connection, in order
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for pipe in list(self.pipes):
            pipe.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        for port in self.ports:
            try:
                up_reader, up_writer = await _connect_retried(port)
            except OSError:
                continue  # not listening (drained): the next one
            self.routed.append(port)
            task = asyncio.current_task()
            assert task is not None
            self.pipes.add(task)
            try:
                await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
            finally:
                self.pipes.discard(task)
            return
        writer.close()


async def _connect_retried(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connect, tried twice (as a balancer retries a connect failure): a listening
    interface's loopback port here once refused the first connect of a run."""
    try:
        return await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        await asyncio.sleep(0.05)
        return await asyncio.open_connection("127.0.0.1", port)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes one way until the end; then the other side's connection goes too (an abort, a
    reset or a close: the interface sees a socket lost without a close frame, 1006)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class Echoer:
    """One FleetSocket client sending numbered frames to SessionConsumer and reading echoes."""

    def __init__(self, url: str) -> None:
        self.name = uuid.uuid4().hex[:12]
        self.ws = FleetSocket(f"{url}/ws/session/{self.name}/", subprotocols=["chat.v1"],
                              origin=ORIGIN)
        self.sent: list[str] = []
        self.echoed: list[str] = []

    async def send_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            text = f"{self.name}-{len(self.sent)}"
            self.sent.append(text)
            await self.ws.send(text)
            await asyncio.sleep(0.02)

    async def read(self, count: int, timeout: float) -> None:
        while len(self.echoed) < count:
            self.echoed.append(str(await asyncio.wait_for(self.ws.recv(), timeout)))


async def test_sigterm_an_interface__clients_get_b_resume_on_the_other__nothing_lost_or_twice(
        fleet: FleetStack, redis: RedisCluster) -> None:
    (draining, other), (worker,) = start(fleet)
    balancer = Balancer([p for p in (draining.port, other.port) if p is not None])
    url = await balancer.start()
    echoers = [Echoer(url) for _ in range(CLIENTS)]
    stop = asyncio.Event()
    try:
        for echoer in echoers:
            await echoer.ws.connect()
        assert balancer.routed == [draining.port] * CLIENTS
        lone = await plain(draining, f"/ws/session/{uuid.uuid4().hex[:12]}/")  # no session
        senders = [asyncio.create_task(e.send_until(stop)) for e in echoers]
        await asyncio.sleep(1.0)
        began = time.monotonic()
        draining.signal(signal.SIGTERM)
        # The plain socket is closed 1001, as before.
        with contextlib.suppress(Exception):
            while True:
                await asyncio.wait_for(lone.recv(), 10)
        assert lone.close_code == 1001
        # Every client is back at once (no back-off) on the other interface, resumed.
        while any(e.ws.resumes < 1 for e in echoers):
            assert time.monotonic() - began < 5, [e.ws.resumes for e in echoers]
            await asyncio.sleep(0.05)
        assert balancer.routed[CLIENTS:] == [other.port] * CLIENTS
        assert await asyncio.to_thread(draining.popen.wait, 15) == 0
        await asyncio.sleep(1.0)  # traffic on the other interface only
        stop.set()
        await asyncio.gather(*senders)
        for echoer in echoers:
            await echoer.read(len(echoer.sent), timeout=10)
            # Server frames: each echo once, in order (FleetSocket drops nothing silently).
            assert echoer.echoed == echoer.sent
            assert echoer.ws.resumes == 1 and echoer.ws.sessions == 1
            # Client frames: the app took each exactly once, in order.
            await echoer.ws.send("stats")
            stats = json.loads(await asyncio.wait_for(echoer.ws.recv(), 10))
            assert stats["received"] == echoer.sent
            assert await records(redis, echoer.name, 2, timeout=0.5) == ["connect"]
        assert f"drain: {CLIENTS} sessions sent B, 0 still open at the end" in draining.tail(200)
        assert await settled(other, "channels_fleet_sessions_resumed_total", CLIENTS) == CLIENTS
        assert await settled(worker, "channels_fleet_sessions_detached", 0) == 0
    finally:
        stop.set()
        for echoer in echoers:
            await echoer.ws.close()
        await balancer.stop()


async def test_a_client_keeping_its_b_socket__frames_meanwhile_replayed__then_closed_4001(
        fleet: FleetStack, redis: RedisCluster) -> None:
    """As the browser's FleetSocket does: after B the old socket is left open (its close would
    end the session) while the client resumes elsewhere; the draining interface closes it 4001
    once the resume superseded it, and its drain ends then, not at its deadline."""
    (draining, other), (worker,) = start(fleet)
    name = uuid.uuid4().hex[:12]
    session = RawSession(f"/ws/session/{name}/")
    await session.open(draining)
    await session.send("one")
    assert await session.recv() == "one"
    await session.send("later:1:3:away")  # the app sends away-0..2 while its client is away
    old = session.ws
    assert old is not None
    draining.signal(signal.SIGTERM)
    assert envelope.parse(await asyncio.wait_for(old.recv(), 10), from_server=True) == Back()
    await asyncio.sleep(1.5)  # the app's frames go to its outbox: no D after B
    hello = await session.open(other, resume=True)
    assert (hello.resumed, hello.ack) == (True, 2)
    assert await session.recv_n(3) == [f"away-{n}" for n in range(3)]
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(old.recv(), 10)  # nothing came on it after B
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    began = time.monotonic()
    assert await asyncio.to_thread(draining.popen.wait, 15) == 0
    assert time.monotonic() - began < 3  # its drain waited for this resume, no longer
    assert "drain: 1 sessions sent B, 0 still open at the end" in draining.tail(200)
    await session.send("two")
    assert await session.recv() == "two"
    assert (await session.stats())["received"] == ["one", "later:1:3:away", "two"]
    assert await records(redis, name, 2, timeout=0.5) == ["connect"]
    assert await settled(worker, "channels_fleet_session_frames_replayed_total", 3) == 3
