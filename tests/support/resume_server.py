"""A stand-in for the interface's side of ``channels-fleet.resume.v1``, on ``websockets``.

The interface does not speak the resume protocol yet (issue 29's server side comes later);
until it does, this small server is what the clients are tested against. It follows
docs/resume-protocol.md's server rules with the shared codec (resume/envelope.py,
resume/buffers.py) and one "app" per session that echoes each frame as ``echo:<frame>``.
Tests reach in to drop connections, push frames, say B or X, or forget sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from channels_fleet.resume import envelope
from channels_fleet.resume.buffers import Inbox, Outbox
from channels_fleet.resume.envelope import Ack, Data, Hello, Payload, ProtocolError


@dataclass(eq=False)
class Session:
    """One session: its app's frames in and out, and the connection it is attached to."""

    token: str
    protocol: str | None
    outbox: Outbox
    inbox: Inbox = field(default_factory=Inbox)
    received: list[Payload] = field(default_factory=list)  # what the app got, in order
    ws: ServerConnection | None = None
    connections: int = 0
    ended: int | None = None  # the close code the app's disconnect carried


class StandInInterface:
    """``await StandInInterface().start()``; ``url``; ``sessions``; ``await stop()``.

    ``plain``: select the app's subprotocol, never the resume one (a server without resume);
    ``acks``: acknowledge the client's frames (False: never, to fill the client's bound).
    """

    def __init__(self, *, plain: bool = False, acks: bool = True,
                 max_frames: int = 1000, echo: bool = True) -> None:
        self.plain, self.acks, self.max_frames, self.echo = plain, acks, max_frames, echo
        self.sessions: dict[str, Session] = {}
        self.offers: list[envelope.Offer] = []
        self.plain_received: list[Payload] = []
        self.server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    async def start(self, port: int = 0) -> StandInInterface:
        self.server = await serve(self._handle, "127.0.0.1", port or self.port or 0,
                                  select_subprotocol=self._select)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    def only(self) -> Session:
        (session,) = self.sessions.values()
        return session

    # -- what tests do to a session -------------------------------------------------------

    def drop(self, session: Session) -> None:
        """The connection is lost (no close frame: 1006 at the client); the app stays."""
        assert session.ws is not None
        session.ws.transport.abort()

    async def push(self, session: Session, payload: Payload) -> None:
        """The app sends a frame (kept if detached)."""
        seq = session.outbox.add(payload)
        ws = session.ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(envelope.encode_data(seq, session.inbox.ack(), payload))

    async def come_back(self, session: Session) -> None:
        assert session.ws is not None
        await session.ws.send(envelope.BACK)

    async def end(self, session: Session, code: int = 1000, reason: str = "") -> None:
        """The app closes: X, then its close."""
        assert session.ws is not None
        session.ended = code
        await session.ws.send(envelope.END)
        await session.ws.close(code, reason)

    # -- the server -----------------------------------------------------------------------

    def _select(self, ws: ServerConnection, offered: Sequence[str]) -> Subprotocol | None:
        parsed = envelope.parse_offer(offered)
        if parsed.resume and not self.plain:
            return Subprotocol(envelope.SUBPROTOCOL)
        return Subprotocol(parsed.app[0]) if parsed.app else None

    async def _handle(self, ws: ServerConnection) -> None:
        offered = [p.strip() for value in ws.request.headers.get_all("Sec-WebSocket-Protocol")
                   for p in value.split(",")]
        offer = envelope.parse_offer(offered)
        self.offers.append(offer)
        if ws.subprotocol != envelope.SUBPROTOCOL:
            async for raw in ws:
                self.plain_received.append(raw)
                if self.echo:
                    await ws.send(f"echo:{raw}" if isinstance(raw, str) else b"echo:" + raw)
            return
        session = self.sessions.get(offer.session or "")
        resumed = (session is not None and session.ended is None
                   and session.outbox.can_replay(offer.last))
        if session is not None and not resumed:
            session.ended = 1006  # could not be resumed: its app is ended
        if session is None or not resumed:
            session = Session(envelope.new_token(), offer.app[0] if offer.app else None,
                              Outbox(self.max_frames, 1 << 30))
            self.sessions[session.token] = session
        old, session.ws = session.ws, ws
        session.connections += 1
        if old is not None:  # superseded: closed, and its end means nothing to the session
            await old.close(envelope.CLOSE_SUPERSEDED, "superseded")
        await ws.send(envelope.encode_hello(Hello(
            session.token, resumed, session.inbox.received if resumed else 0, session.protocol)))
        if resumed:
            session.outbox.ack(offer.last)
            for seq, payload in session.outbox.unacked(offer.last):
                await ws.send(envelope.encode_data(seq, session.inbox.ack(), payload))
        await self._read(ws, session)

    async def _read(self, ws: ServerConnection, session: Session) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for raw in ws:
                message = envelope.parse(raw, from_server=False)
                if isinstance(message, Data | Ack):
                    session.outbox.ack(message.ack)
                if isinstance(message, Data) and session.inbox.accept(message.seq, loop.time()):
                    session.received.append(message.payload)
                    if self.echo:
                        payload = message.payload
                        await self.push(session, f"echo:{payload}" if isinstance(payload, str)
                                        else b"echo:" + payload)
                    if self.acks and session.inbox.ack_due(loop.time()):
                        await ws.send(envelope.encode_ack(session.inbox.ack()))
        except ProtocolError as exc:
            session.ended = envelope.CLOSE_PROTOCOL_ERROR
            await ws.close(envelope.CLOSE_PROTOCOL_ERROR, str(exc)[:100])
            return
        except ConnectionClosed:
            pass
        if session.ws is not ws:
            return  # superseded
        session.ws = None
        rcvd = ws.protocol.close_rcvd
        if session.ended is None and envelope.client_close_ends_session(
                rcvd.code if rcvd else None):
            session.ended = rcvd.code if rcvd else 1006
