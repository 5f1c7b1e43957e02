"""A resumable session (docs/resume-protocol.md) spoken by hand over ``websockets``, for the
tests of tests/integration/resume: each connection can be cut without a close frame (the TCP
transport aborted, as a network loss looks to the interface), and every sequence number and
hello is there to assert on.

    session = RawSession("/ws/session/s1/")
    hello = await session.open(iface)               # a new session
    await session.send("hi"); assert await session.recv() == "hi"
    session.cut()                                   # no close frame: the session detaches
    hello = await session.open(other, resume=True)  # resends what the hello says it lacks
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.cluster import RedisCluster
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from channels_fleet.dev.stack import ServiceProcess
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.resume import envelope
from channels_fleet.resume.envelope import Ack, Data, End, Hello
from support.scrape import metric

#: One site in front of every interface (a load balancer's): a resume's Origin is the
#: handshake's, on whichever interface it lands (the same host as theirs, no port).
ORIGIN = "http://127.0.0.1"
#: Every socket opened here, closed at each test's end (conftest.py).
OPEN: list[ClientConnection] = []


def fresh() -> tuple[str, str]:
    """A SessionConsumer name nobody used, and its path."""
    name = uuid.uuid4().hex[:12]
    return name, f"/ws/session/{name}/"


def sender(layer: RedisClusterChannelLayer,
           group: str) -> Callable[..., Awaitable[None]]:
    """``to_group(*texts)``: each text to ``group`` as a ``session.message``, in order."""
    async def to_group(*texts: str) -> None:
        for text in texts:
            await layer.group_send(group, {"type": "session.message", "text": text})
    return to_group


async def plain(iface: ServiceProcess, path: str, *subprotocols: str) -> ClientConnection:
    """A plain WebSocket (no resume offer) to ``iface``."""
    ws = await connect(iface.url + path, origin=Origin(ORIGIN), open_timeout=10,
                       subprotocols=[Subprotocol(p) for p in subprotocols] or None)
    OPEN.append(ws)
    return ws


class RawSession:
    """One session over successive connections: the client's frames it sent (by seq, for
    replay) and the server's it received (checked consecutive: a gap or a duplicate fails)."""

    def __init__(self, path: str, app: tuple[str, ...] = ("chat.v1",)) -> None:
        self.path = path
        self.app = app
        self.token: str | None = None
        self.sent: list[str] = []  # the client's frames; seq n is sent[n - 1]
        self.received: list[str] = []  # the server's frames; seq n is received[n - 1]
        self.ws: ClientConnection | None = None
        self.hello: Hello | None = None
        self.server_ack = 0  # the highest client seq the server acknowledged (A or D)

    @property
    def last(self) -> int:
        return len(self.received)

    async def open(self, iface: ServiceProcess, *, resume: bool = False,
                   token: str | None = None) -> Hello:
        """Connect to ``iface``: a new session, or (``resume``) this one (or ``token``) after
        ``last``. A new session's hello starts the numbering afresh; a resumed one's makes
        this client resend its frames past the hello's ack, as the protocol says."""
        offered_token = token or (self.token if resume else None)
        offered = envelope.offer(self.app, offered_token, self.last if offered_token else 0)
        ws = await connect(iface.url + self.path, origin=Origin(ORIGIN), open_timeout=15,
                           subprotocols=[Subprotocol(p) for p in offered])
        OPEN.append(ws)
        assert ws.subprotocol == envelope.SUBPROTOCOL, (
            f"the interface selected {ws.subprotocol!r}, not the resume subprotocol "
            f"{envelope.SUBPROTOCOL!r} (offered {offered})")
        hello = envelope.parse(await asyncio.wait_for(ws.recv(), 10), from_server=True)
        assert isinstance(hello, Hello), f"first message {hello!r} is not the hello"
        self.ws, self.hello = ws, hello
        if hello.resumed:
            assert hello.session == offered_token and hello.ack <= len(self.sent), hello
            self.server_ack = hello.ack
            for seq in range(hello.ack + 1, len(self.sent) + 1):
                await ws.send(envelope.encode_data(seq, self.last, self.sent[seq - 1]))
        else:
            assert hello.ack == 0, hello
            self.token, self.sent, self.received, self.server_ack = hello.session, [], [], 0
        return hello

    def _current(self) -> ClientConnection:
        assert self.ws is not None, "not connected"
        return self.ws

    async def send(self, text: str) -> None:
        self.sent.append(text)
        await self._current().send(envelope.encode_data(len(self.sent), self.last, text))

    async def echo(self, text: str) -> None:
        """Send ``text`` and check the app's next frame is it."""
        await self.send(text)
        assert await self.recv() == text

    async def recv(self, timeout: float = 10) -> str:
        """The next app frame (acks noted on the way)."""
        ws = self._current()
        while True:
            message = envelope.parse(await asyncio.wait_for(ws.recv(), timeout),
                                     from_server=True)
            if isinstance(message, Ack):
                self.server_ack = max(self.server_ack, message.ack)
                continue
            if isinstance(message, End):
                raise AssertionError(f"X (the session ended) after server frame {self.last}")
            assert isinstance(message, Data), f"{message!r} where a D was expected"
            assert message.seq == self.last + 1, (
                f"server frame {message.seq} after {self.last}: a gap or a duplicate")
            self.server_ack = max(self.server_ack, message.ack)
            assert isinstance(message.payload, str)
            self.received.append(message.payload)
            return message.payload

    async def acked(self, seq: int, timeout: float = 5) -> int:
        """Wait for the server to acknowledge client frame ``seq`` (an A: no D may come
        first); the ack it sent."""
        ws = self._current()
        while self.server_ack < seq:
            message = envelope.parse(await asyncio.wait_for(ws.recv(), timeout),
                                     from_server=True)
            assert isinstance(message, Ack), f"{message!r} where an A was expected"
            assert message.ack >= self.server_ack, f"A {message.ack} after {self.server_ack}"
            self.server_ack = message.ack
        return self.server_ack

    async def recv_n(self, count: int, timeout: float = 10) -> list[str]:
        return [await self.recv(timeout) for _ in range(count)]

    async def stats(self) -> dict[str, Any]:
        """What the app was given (SessionConsumer's ``stats``); nothing else may be pending."""
        await self.send("stats")
        return dict(json.loads(await self.recv()))

    async def close(self, code: int = 1000) -> None:
        """Close this connection with ``code`` (1000: the session ends)."""
        await self._current().close(code)

    def cut(self) -> None:
        """Lose the connection: no close frame, the TCP connection just goes."""
        self._current().transport.abort()

    def fork(self) -> RawSession:
        """Another client holding this one's session state (two resumes of one token)."""
        twin = RawSession(self.path, self.app)
        twin.token, twin.sent, twin.received = self.token, list(self.sent), list(self.received)
        return twin

    async def closed(self, timeout: float = 10) -> tuple[int | None, list[Any]]:
        """Wait for the server to close this connection: the code it sent (None: none) and
        the messages that came first."""
        ws = self._current()
        seen: list[Any] = []
        try:
            while True:
                raw = await asyncio.wait_for(ws.recv(), timeout)
                seen.append(envelope.parse(raw, from_server=True))
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd is not None else None), seen


async def resumed_elsewhere(path: str, home: ServiceProcess, other: ServiceProcess,
                            pause: float = 0.5) -> RawSession:
    """A session begun on ``home`` (one frame echoed), its socket cut, resumed on ``other``:
    its channel stays homed on ``home``."""
    session = RawSession(path)
    await session.open(home)
    await session.echo("hi")
    session.cut()
    await asyncio.sleep(pause)
    hello = await session.open(other, resume=True)
    assert (hello.resumed, hello.ack) == (True, 1), hello
    return session


async def records(redis: RedisCluster, name: str, count: int = 0,
                  timeout: float = 10) -> list[str]:
    """What SessionConsumer ``name`` recorded (``connect``, ``disconnect:<code>``), once there
    are ``count`` or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        raw: list[bytes] = redis.lrange(f"split:session:{name}", 0, -1)  # type: ignore[assignment]
        got = [v.decode() for v in raw]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def settled(proc: ServiceProcess, name: str, expected: float, timeout: float = 5,
                  **labels: str) -> float:
    """``proc``'s metric ``name`` (scrape.metric) once it is ``expected`` or ``timeout`` has
    passed: counted a moment after what the test saw."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(metric, proc, name, **labels)
        if value == expected or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)
