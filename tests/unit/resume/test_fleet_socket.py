"""FleetSocket against a real ``websockets`` server speaking the resume protocol.

The server is tests/support/resume_server.py's StandInInterface: it stands in for the
interface until the interface's side of issue 29 exists.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from support.resume_server import StandInInterface

from channels_fleet.exceptions import SessionEnded
from channels_fleet.resume.client import FleetSocket

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def server() -> AsyncIterator[StandInInterface]:
    server = await StandInInterface().start()
    yield server
    await server.stop()


async def recv_n(ws: FleetSocket, n: int) -> list[str | bytes]:
    return [await asyncio.wait_for(ws.recv(), 5) for _ in range(n)]


async def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_new_session__hello_gives_token_and_the_apps_protocol(
        server: StandInInterface) -> None:
    async with FleetSocket(server.url, ["chat.v2", "chat.v1"]) as ws:
        assert ws.resumable and ws.session and ws.protocol == "chat.v2"
        await ws.send("hi")
        await ws.send(b"\x00bin")
        assert await recv_n(ws, 2) == ["echo:hi", b"echo:\x00bin"]
        assert ws.sessions == 1
    assert server.offers[0].app == ("chat.v2", "chat.v1") and server.offers[0].session is None


async def test_dropped_connection__resumes_and_both_sides_get_everything_once_in_order(
        server: StandInInterface) -> None:
    new_sessions: list[int] = []
    async with FleetSocket(server.url, backoff_base=0.01, backoff_cap=0.05,
                           on_new_session=new_sessions.append) as ws:
        await ws.send("a")
        assert await recv_n(ws, 1) == ["echo:a"]
        session = server.only()
        server.drop(session)
        await ws.send("b")  # kept while the connection is down (or lost on the old one)
        await server.push(session, "pushed while away")
        await ws.send("c")
        assert await recv_n(ws, 3) == ["pushed while away", "echo:b", "echo:c"]
        assert session.received == ["a", "b", "c"]
        assert session.ended is None and session.connections == 2
        assert ws.resumes == 1 and ws.sessions == 1 and new_sessions == []
        assert server.offers[1].session == session.token and server.offers[1].last == 1


async def test_come_back__reconnects_at_once_without_backoff(server: StandInInterface) -> None:
    async with FleetSocket(server.url, backoff_base=5.0, backoff_cap=5.0) as ws:
        session = server.only()
        started = time.monotonic()
        await server.come_back(session)
        await wait_for(lambda: session.connections == 2)
        assert time.monotonic() - started < 2.0
        await ws.send("after")
        assert await recv_n(ws, 1) == ["echo:after"]
        assert ws.resumes == 1


async def test_lost_session__starts_afresh_and_tells_the_app(server: StandInInterface) -> None:
    new_sessions: list[int] = []
    server.acks = server.echo = False  # the "a" below stays unacknowledged
    async with FleetSocket(server.url, ["chat.v2"], backoff_base=0.01,
                           on_new_session=new_sessions.append) as ws:
        await ws.send("a")
        first = server.only()
        await wait_for(lambda: first.received == ["a"])
        server.sessions.clear()  # expired
        first.ended = 1006
        server.drop(first)
        await wait_for(lambda: ws.sessions == 2)
        assert new_sessions == [1]
        assert ws.session != first.token and ws.protocol == "chat.v2"
        await ws.send("fresh")
        await wait_for(lambda: server.only().received == ["fresh"])  # "a" was not re-sent


async def test_end__x_then_the_apps_close_is_final(server: StandInInterface) -> None:
    async with FleetSocket(server.url) as ws:
        await server.end(server.only(), 4003, "bye")
        with pytest.raises(SessionEnded) as ended:
            await asyncio.wait_for(ws.recv(), 5)
        assert (ended.value.code, ended.value.reason) == (4003, "bye")
        with pytest.raises(SessionEnded):
            await ws.send("late")
        assert len(server.offers) == 1  # no reconnect


async def test_close__ends_the_session_on_the_server(server: StandInInterface) -> None:
    ws = FleetSocket(server.url)
    await ws.connect()
    await ws.close()
    await wait_for(lambda: server.only().ended == 1000)
    assert ws.ended is not None and ws.ended.code == 1000


async def test_superseded_or_protocol_error_close__is_final(server: StandInInterface) -> None:
    async with FleetSocket(server.url) as ws:
        session = server.only()
        assert session.ws is not None
        await session.ws.send("D 5 0\nskips")
        with pytest.raises(SessionEnded) as ended:
            await asyncio.wait_for(ws.recv(), 5)
        assert ended.value.code == 1002 and "frame 5 after frame 0" in ended.value.reason
    await wait_for(lambda: session.ws is None)
    assert session.ended == 4002  # the client's protocol-error close ended it


async def test_acks__sent_after_ack_every_frames_without_sending_anything(
        server: StandInInterface) -> None:
    async with FleetSocket(server.url) as ws:
        session = server.only()
        for i in range(16):
            await server.push(session, f"m{i}")
        await recv_n(ws, 16)
        await wait_for(lambda: session.outbox.acked == 16)
        await server.push(session, "one more")
        await recv_n(ws, 1)
        await wait_for(lambda: session.outbox.acked == 17, timeout=3)  # after ACK_AFTER_S


async def test_bound_overflow__a_resume_that_cannot_replay_becomes_a_new_session() -> None:
    server = await StandInInterface(acks=False, echo=False).start()
    new_sessions: list[int] = []
    try:
        async with FleetSocket(server.url, max_unacked=3, backoff_base=0.2, backoff_cap=0.2,
                               on_new_session=new_sessions.append) as ws:
            first = server.only()
            for i in range(5):  # never acknowledged: 1 and 2 leave the bound
                await ws.send(f"m{i}")
            await wait_for(lambda: len(first.received) == 5)
            first.received.clear()
            first.inbox.reset()  # as if the app had lost them: it will ask for 1 on
            server.drop(first)
            await wait_for(lambda: ws.sessions == 2)
            assert first.ended == 4010  # the client ended the old session, it did not linger
            assert new_sessions == [5]
            assert ws.session != first.token
    finally:
        await server.stop()


async def test_plain_server__no_envelope_and_a_new_session_after_a_drop() -> None:
    server = await StandInInterface(plain=True).start()
    new_sessions: list[int] = []
    try:
        async with FleetSocket(server.url, ["chat.v2"], backoff_base=0.01,
                               on_new_session=new_sessions.append) as ws:
            assert not ws.resumable and ws.session is None and ws.protocol == "chat.v2"
            await ws.send("raw")
            assert await recv_n(ws, 1) == ["echo:raw"]
            assert server.plain_received == ["raw"]
            server.port = server.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            for conn in list(server.server.connections):  # type: ignore[union-attr]
                conn.transport.abort()
            await wait_for(lambda: ws.sessions == 2)
            assert new_sessions == [0]
    finally:
        await server.stop()


async def test_max_retries__ends_the_session_when_the_server_stays_away(
        server: StandInInterface) -> None:
    async with FleetSocket(server.url, max_retries=2, backoff_base=0.01) as ws:
        await server.stop()
        with pytest.raises(SessionEnded) as ended:
            await asyncio.wait_for(ws.recv(), 5)
        assert ended.value.code == 1006 and "gave up after 3" in ended.value.reason


async def test_first_connect__failure_raises() -> None:
    with pytest.raises(OSError):
        await FleetSocket("ws://127.0.0.1:9/").connect()


def test_reserved_app_subprotocols__refused_at_construction() -> None:
    with pytest.raises(ValueError, match="reserved"):
        FleetSocket("ws://x/", ["channels-fleet.resume.v1"])
