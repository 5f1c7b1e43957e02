"""The resume bench's clients: resumable (FleetSocket) and plain (``websockets``, reconnecting
as a plain app does), each echoing numbered frames and reading a room's numbered broadcasts.

Both check their streams the same way (:class:`Tally`): echo ``e<n>`` comes back once, room
message ``g<n>`` arrives once; ``lost`` and ``duplicated`` are counted from the numbers. A
:class:`Link` times each cut of a client's connection: from the moment the connection was lost
(``connection_lost``, whatever ended it) to the first frame read after a new connection was
made, the client's gap. The plain client reconnects with FleetSocket's own back-off
(``envelope.reconnect_delay``), so the two differ only in resuming.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Origin

from channels_fleet.exceptions import SessionEnded
from channels_fleet.resume import envelope
from channels_fleet.resume.client import FleetSocket

#: One site in front of every interface: the Origin every client sends (and resumes with).
ORIGIN = "http://127.0.0.1"


class Link:
    """A client's connections as the TCP layer sees them, and its gaps. ``on_back`` is called
    at the first connection made after a cut: the client sends a frame then, as an app that
    re-syncs would, so the gap ends with the first frame the server can answer (not with the
    next room message, which a consumer whose home interface died may never get)."""

    def __init__(self, on_back: Callable[[], None]) -> None:
        self.on_back = on_back
        self.cut_at: float | None = None  # the open cut: lost, no frame since reconnecting
        self.reconnected = False
        self.connected = False
        self.closing = False  # the bench's own close is no cut
        self.cuts = 0
        self.gaps: list[float] = []
        self.cut_times: list[float] = []  # when each of ``gaps`` began

    def made(self) -> None:
        self.connected = True
        if self.cut_at is not None and not self.reconnected:
            self.reconnected = True
            self.on_back()

    def lost(self) -> None:
        self.connected = False
        if self.closing or self.cut_at is not None:
            return  # a failed reconnect extends the cut it belongs to
        self.cut_at = time.monotonic()
        self.cuts += 1
        self.reconnected = False

    def frame(self) -> None:
        if self.cut_at is not None and self.reconnected:
            self.gaps.append(time.monotonic() - self.cut_at)
            self.cut_times.append(self.cut_at)
            self.cut_at = None

    def factory(self) -> Any:
        """A ``create_connection`` for ``websockets.connect`` reporting to this link."""
        link = self

        class Timed(ClientConnection):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                link.made()

            def connection_lost(self, exc: Exception | None) -> None:
                super().connection_lost(exc)
                link.lost()

        return Timed


class Tally:
    """The numbered frames a client sent and got back (echo) and the room's it got."""

    def __init__(self) -> None:
        self.sent = 0  # echo frames e0 .. e<sent-1> handed to the socket
        self.echoes: set[int] = set()
        self.room: set[int] = set()
        self.duplicated = 0
        self.other = 0  # frames that are neither (none expected)

    def take(self, message: str | bytes) -> None:
        if not isinstance(message, str) or message[:1] not in ("e", "g"):
            self.other += 1
            return
        seen = self.echoes if message[0] == "e" else self.room
        n = int(message[1:])
        if n in seen:
            self.duplicated += 1
        seen.add(n)

    def lost(self, room_sent: list[int]) -> int:
        """Echo frames never echoed plus room messages (of ``room_sent``) never received."""
        echo_lost = self.sent - len(self.echoes)
        return echo_lost + sum(1 for n in room_sent if n not in self.room)

    def whole(self, room_sent: list[int]) -> bool:
        return len(self.echoes) >= self.sent and len(self.room) >= len(room_sent)


class ResumeClient:
    """A FleetSocket on the SessionConsumer at ``url``."""

    def __init__(self, url: str) -> None:
        self.link = Link(self.resync)
        self.tally = Tally()
        self.sending: set[asyncio.Task[None]] = set()
        self.sock = FleetSocket(url, origin=ORIGIN, create_connection=self.link.factory(),
                                open_timeout=20)
        self.reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.sock.connect()
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        with contextlib.suppress(SessionEnded):
            async for message in self.sock:
                self.link.frame()
                self.tally.take(message)

    def resync(self) -> None:
        """Sent at once: FleetSocket keeps it until the hello, then sends it first."""
        task = asyncio.ensure_future(self.send_next())
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def send_next(self) -> None:
        """Always accepted: kept while the connection is away, replayed on resuming."""
        n = self.tally.sent
        self.tally.sent += 1
        with contextlib.suppress(SessionEnded):
            await self.sock.send(f"e{n}")

    @property
    def resumes(self) -> int:
        return self.sock.resumes

    @property
    def ended(self) -> bool:
        return self.sock.ended is not None

    @property
    def new_sessions(self) -> int:
        """Sessions after the first: each one a lost session (a new consumer on the server)."""
        return max(0, self.sock.sessions - 1)

    async def close(self) -> None:
        self.link.closing = True
        await self.sock.close()
        if self.reader is not None:
            await self.reader


class PlainClient:
    """A plain WebSocket on the same consumer, reconnected (a new consumer) when it ends."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.link = Link(self.resync)
        self.tally = Tally()
        self.ws: ClientConnection | None = None
        self.connects = 0
        self.resync_due = False
        self.opened = asyncio.Event()
        self.runner: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.runner = asyncio.create_task(self.run())
        await self.opened.wait()

    async def run(self) -> None:
        failures = 0
        while not self.link.closing:
            try:
                async with connect(self.url, origin=Origin(ORIGIN), open_timeout=20,
                                   create_connection=self.link.factory()) as ws:
                    self.ws, failures = ws, 0
                    self.connects += 1
                    self.opened.set()
                    if self.resync_due:
                        self.resync_due = False
                        await self.send_next()
                    async for message in ws:
                        self.link.frame()
                        self.tally.take(message)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed):
                failures += 1
            self.ws = None
            if not self.link.closing:
                await asyncio.sleep(envelope.reconnect_delay(max(failures, 1)))

    def resync(self) -> None:
        """A frame once the handshake is done (a plain socket cannot send before)."""
        self.resync_due = True

    async def send_next(self) -> None:
        """Sent only while connected (a plain app has nowhere to keep it); counted once sent."""
        ws = self.ws
        if ws is None:
            return
        n = self.tally.sent
        self.tally.sent += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(f"e{n}")

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    async def close(self) -> None:
        self.link.closing = True
        if self.ws is not None:
            await self.ws.close()
        if self.runner is not None:
            self.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.runner
