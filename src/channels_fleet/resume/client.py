"""``FleetSocket``: a Python WebSocket client whose session survives its connection.

It speaks ``channels-fleet.resume.v1`` (docs/resume-protocol.md) on the ``websockets``
library: a dropped connection is reconnected (full-jitter back-off, or at once when the
interface asks with ``B``) and resumed, each side replaying what the other had not
acknowledged, so the app on the server and the code reading here see one unbroken stream. For
tests, bots and services; browsers use ``static/channels_fleet/fleet-socket.js``.

    async with FleetSocket("wss://example.com/ws/chat/", subprotocols=["chat.v2"]) as ws:
        await ws.send('{"join": "lobby"}')
        async for message in ws:
            ...

A server that does not select the resume subprotocol gets a plain WebSocket, reconnected
after an unclean end as a new session. ``on_new_session(lost)`` is called whenever a session
other than the first starts (the old one was lost: expired, unknown, or a plain server), with
the number of frames sent and never acknowledged, which are dropped: re-join there.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Origin, Subprotocol

from ..exceptions import SessionEnded
from . import envelope
from .buffers import Inbox, Outbox
from .envelope import Ack, Back, Data, End, Hello, Payload, ProtocolError

logger = logging.getLogger(__name__)

#: What ``on_new_session`` is: called with the count of unacknowledged frames dropped.
NewSessionHook = Callable[[int], Awaitable[None] | None]


class _ResumeLost(Exception):
    """The server resumed the session but this client no longer holds what it needs."""


class FleetSocket:
    """A reconnecting, resuming WebSocket client (module docstring).

    ``subprotocols`` are the app's own; ``max_unacked`` / ``max_unacked_bytes`` bound the
    frames kept for replay (beyond, the oldest go and a later resume may find the session
    lost); ``max_retries`` failed reconnects in a row end the session (None: never);
    ``connect_options`` go to ``websockets.asyncio.client.connect``.
    """

    def __init__(
        self,
        url: str,
        subprotocols: Sequence[str] = (),
        *,
        origin: str | None = None,
        max_unacked: int = envelope.CLIENT_MAX_FRAMES,
        max_unacked_bytes: int = envelope.CLIENT_MAX_BYTES,
        backoff_base: float = envelope.RECONNECT_BASE,
        backoff_cap: float = envelope.RECONNECT_CAP,
        max_retries: int | None = None,
        hello_timeout: float = envelope.HELLO_TIMEOUT,
        on_new_session: NewSessionHook | None = None,
        **connect_options: Any,
    ) -> None:
        envelope.offer(subprotocols)  # refuses reserved names now, not at the first connect
        if not 0 <= backoff_base <= backoff_cap:
            raise ValueError(f"FleetSocket needs 0 <= backoff_base <= backoff_cap; got "
                             f"{backoff_base}, {backoff_cap}")
        self.url = url
        self._app_protocols = list(subprotocols)
        self._origin = origin
        self._backoff = (backoff_base, backoff_cap)
        self._max_retries = max_retries
        self._hello_timeout = hello_timeout
        self._on_new_session = on_new_session
        self._options = connect_options
        self._outbox = Outbox(max_unacked, max_unacked_bytes)
        self._inbox = Inbox()
        self._incoming: asyncio.Queue[Payload | None] = asyncio.Queue()  # None: ended
        self._ws: ClientConnection | None = None
        self._ready = False  # frames go to self._ws (its hello is handled)
        self._sent = 0  # the highest seq written to self._ws
        self._write = asyncio.Lock()  # frames go out in seq order, one writer at a time
        self._ack_wanted = asyncio.Event()
        self._token: str | None = None
        self._resumable = False
        self._protocol: str | None = None
        self._closing = False
        self._ended: SessionEnded | None = None
        self._task: asyncio.Task[None] | None = None
        self._hooks: set[asyncio.Task[None]] = set()
        #: Sessions started (1 after the first connect) and connections resumed.
        self.sessions = 0
        self.resumes = 0

    # -- the app's side -------------------------------------------------------------------

    @property
    def protocol(self) -> str | None:
        """The subprotocol the app on the server chose (never the resume one)."""
        return self._protocol

    @property
    def resumable(self) -> bool:
        """Whether the server speaks the resume protocol (else: a plain WebSocket)."""
        return self._resumable

    @property
    def session(self) -> str | None:
        """The session token (None on a plain WebSocket)."""
        return self._token

    @property
    def ended(self) -> SessionEnded | None:
        """Why the session ended for good, once it has."""
        return self._ended

    async def __aenter__(self) -> FleetSocket:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Payload]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Payload]:
        with contextlib.suppress(SessionEnded):
            while True:
                yield await self.recv()

    async def connect(self) -> None:
        """Open the first connection; its failure raises (later ones are retried)."""
        if self._task is not None:
            raise RuntimeError("FleetSocket.connect() called twice")
        await self._open()
        self._task = asyncio.create_task(self._run(), name=f"FleetSocket {self.url}")

    async def send(self, message: Payload) -> None:
        """Send one frame (str: text, bytes: binary). While reconnecting it is kept and sent
        on resuming; raises SessionEnded once the session is over."""
        if self._ended is not None:
            raise self._ended
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"FleetSocket.send() takes str or bytes, not {type(message).__name__}")
        if not self._resumable:
            if self._ready and self._ws is not None:
                with contextlib.suppress(ConnectionClosed):  # plain: at most once
                    await self._ws.send(message)
            else:
                self._outbox.add(message)  # only counted: dropped at the next connection
            return
        self._outbox.add(message)
        await self._flush()

    async def recv(self) -> Payload:
        """The next frame from the app; raises SessionEnded once the session is over and
        every frame before its end was read."""
        message = await self._incoming.get()
        if message is None:
            self._incoming.put_nowait(None)
            assert self._ended is not None
            raise self._ended
        return message

    async def close(self, code: int = envelope.CLOSE_NORMAL, reason: str = "") -> None:
        """End the session: the app on the server gets its disconnect (with ``code``)."""
        if self._ended is not None:
            return
        self._closing = True
        task, ws, reading = self._task, self._ws, self._ready
        if ws is not None and reading:
            await ws.close(code, reason)
        if task is not None:
            if not reading:
                task.cancel()  # between connections: nothing to tell the server
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if ws is not None and not reading:
            await ws.close(code, reason)  # the first connection, if connect() ran alone
        if self._ended is None:
            self._finish(SessionEnded(code, reason))

    # -- connections ----------------------------------------------------------------------

    async def _open(self) -> None:
        """Connect, handshake, read the hello and replay; the connection is then current."""
        if self._token is not None:
            offered = envelope.offer(self._app_protocols, self._token, self._inbox.received)
        else:
            offered = envelope.offer(self._app_protocols)
        ws = await connect(
            self.url, subprotocols=[Subprotocol(p) for p in offered],
            origin=Origin(self._origin) if self._origin else None, **self._options)
        try:
            lost = await self._greet(ws)
        except ProtocolError as exc:
            await ws.close(envelope.CLOSE_CLIENT_PROTOCOL_ERROR, str(exc)[:100])
            raise
        except _ResumeLost as exc:
            await ws.close(envelope.CLOSE_RESUME_LOST, str(exc)[:100])  # the server ends it
            raise
        except BaseException:
            ws.transport.abort()
            raise
        if lost is not None:
            self._new_session_hook(lost)

    async def _greet(self, ws: ClientConnection) -> int | None:
        """Take ``ws`` as the current connection; return the frames a new session dropped
        (None when it is the first session or a resume)."""
        selected = ws.subprotocol
        if selected != envelope.SUBPROTOCOL:
            if selected is not None and selected.startswith(envelope.RESERVED_PREFIX):
                raise ProtocolError(f"the server selected {selected!r}")
            lost = self._start_session(None, selected)
            sent = 0
        else:
            hello = envelope.parse(await asyncio.wait_for(ws.recv(), self._hello_timeout),
                                   from_server=True)
            if not isinstance(hello, Hello):
                raise ProtocolError(f"first message is a {type(hello).__name__}, not the hello")
            if hello.resumed:
                self._resume(ws, hello)
                lost, sent = None, hello.ack
            else:
                lost, sent = self._start_session(hello.session, hello.protocol), 0
        async with self._write:
            self._ws, self._sent, self._ready = ws, sent, True
        await self._flush()
        return lost

    def _resume(self, ws: ClientConnection, hello: Hello) -> None:
        if self._token is None or hello.session != self._token:
            raise ProtocolError("the server resumed a session this client did not offer")
        if hello.ack > self._outbox.seq:
            raise ProtocolError(f"hello acks frame {hello.ack}; the last sent is "
                                f"{self._outbox.seq}")
        if not self._outbox.can_replay(hello.ack):
            raise _ResumeLost(f"the server has client frames up to {hello.ack}, this client "
                              f"kept those after {max(self._outbox.acked, self._outbox.lost)}")
        self._outbox.ack(hello.ack)
        self._protocol = hello.protocol
        self.resumes += 1
        logger.info("Resumed session on %s: replaying %d frames after %d", self.url,
                    self._outbox.seq - hello.ack, hello.ack)

    def _start_session(self, token: str | None, protocol: str | None) -> int | None:
        lost = self._outbox.reset()
        self._inbox.reset()
        self._token, self._protocol, self._resumable = token, protocol, token is not None
        self.sessions += 1
        if self.sessions == 1:
            return None
        logger.info("New session on %s (%s): the last one was lost, %d unacknowledged frames "
                    "dropped", self.url, "resumable" if token else "plain", lost)
        return lost

    def _new_session_hook(self, lost: int) -> None:
        if self._on_new_session is None:
            return
        result = self._on_new_session(lost)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._hooks.add(task)
            task.add_done_callback(self._hooks.discard)

    async def _flush(self) -> None:
        """Write the frames past ``_sent`` to the current connection, in order."""
        async with self._write:
            ws = self._ws
            while (self._ready and ws is self._ws and ws is not None
                   and self._sent < self._outbox.seq):
                frames = self._outbox.unacked(self._sent)
                if not frames or frames[0][0] != self._sent + 1:
                    # Dropped at the bound before it was ever written: nobody has it.
                    await self._abandon(ws, "frames dropped at the client's bound unsent")
                    return
                try:
                    for seq, payload in frames:
                        await ws.send(envelope.encode_data(seq, self._inbox.ack(), payload))
                        self._sent = seq
                except ConnectionClosed:
                    return  # the reader sees it and reconnects

    async def _abandon(self, ws: ClientConnection, why: str) -> None:
        """End a session this client can no longer keep whole; the next one starts afresh."""
        logger.warning("Giving up session on %s: %s", self.url, why)
        self._token = None
        self._ready = False
        await ws.close(envelope.CLOSE_RESUME_LOST, why[:100])

    async def _run(self) -> None:
        """Read the current connection; reconnect and resume when it ends, until the end."""
        try:
            while True:
                ws = self._ws
                assert ws is not None
                acker = asyncio.create_task(self._acker(ws))
                try:
                    outcome = await self._read(ws)
                finally:
                    acker.cancel()
                if isinstance(outcome, SessionEnded):
                    self._finish(outcome)
                    return
                if not await self._reconnect(at_once=outcome):
                    return
        except Exception as exc:  # a bug here must not leave recv() waiting for ever
            logger.exception("FleetSocket on %s failed", self.url)
            self._finish(SessionEnded(1011, f"client failure: {exc!r}"[:100]))

    async def _read(self, ws: ClientConnection) -> SessionEnded | bool:
        """Deliver ``ws``'s frames until it ends; return how the session ended, or whether to
        reconnect at once (True: the server asked, or the session was given up)."""
        loop = asyncio.get_running_loop()
        ending = False  # X came: the close that follows is final
        try:
            while True:
                raw = await ws.recv()
                if not self._resumable:
                    self._incoming.put_nowait(raw)
                    continue
                if ending:
                    continue
                message = envelope.parse(raw, from_server=True)
                if isinstance(message, Data):
                    self._outbox.ack(message.ack)
                    if self._inbox.accept(message.seq, loop.time()):
                        self._incoming.put_nowait(message.payload)
                    if self._inbox.ack_due(loop.time()):
                        await self._send_ack(ws)
                    else:
                        self._ack_wanted.set()
                elif isinstance(message, Ack):
                    self._outbox.ack(message.ack)
                elif isinstance(message, Back):
                    self._ready = False
                    ws.transport.abort()  # no close frame: the server only detaches it
                    return True
                elif isinstance(message, End):
                    ending = True
                else:
                    raise ProtocolError("a second hello")
        except ProtocolError as exc:
            self._ready = False
            logger.warning("Protocol error from %s: %s", self.url, exc)
            await ws.close(envelope.CLOSE_CLIENT_PROTOCOL_ERROR, str(exc)[:100])
            return SessionEnded(envelope.CLOSE_PROTOCOL_ERROR, f"protocol error: {exc}"[:120])
        except ConnectionClosed as exc:
            self._ready = False
            code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
            if self._closing:
                return SessionEnded(exc.sent.code if exc.sent else code,
                                    exc.sent.reason if exc.sent else reason)
            if self._token is None and self._resumable:
                return True  # abandoned (_abandon): a new session at once
            if ending:
                return SessionEnded(code, reason)
            if not self._resumable:  # plain: an app's close is final, a lost socket is not
                if exc.rcvd and (code == 1000 or 3000 <= code <= 4999):
                    return SessionEnded(code, reason)
                return False
            if exc.rcvd and code in (envelope.CLOSE_PROTOCOL_ERROR, envelope.CLOSE_SUPERSEDED):
                return SessionEnded(code, reason)
            logger.info("Connection to %s ended (%d %s); resuming", self.url, code, reason)
            return False

    async def _reconnect(self, at_once: bool) -> bool:
        """Connect again until it works (True) or the session ends (False)."""
        failures = 0
        while True:
            if not (at_once and failures == 0):
                await asyncio.sleep(envelope.reconnect_delay(failures + 1, *self._backoff))
            try:
                await self._open()
                return True
            except _ResumeLost as exc:
                logger.warning("Cannot resume on %s: %s; starting a new session", self.url, exc)
                self._token = None  # _open closed that connection; the next one is new
                failures, at_once = 0, True
            except ProtocolError as exc:
                self._finish(SessionEnded(envelope.CLOSE_PROTOCOL_ERROR,
                                          f"protocol error: {exc}"[:120]))
                return False
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
                failures += 1
                if self._max_retries is not None and failures > self._max_retries:
                    self._finish(SessionEnded(1006, f"gave up after {failures} reconnects"))
                    return False
                logger.debug("Reconnect %d to %s failed: %r", failures, self.url, exc)

    async def _acker(self, ws: ClientConnection) -> None:
        """Send an A once the oldest unacknowledged frame is ACK_AFTER_S old."""
        loop = asyncio.get_running_loop()
        while True:
            await self._ack_wanted.wait()
            due = self._inbox.ack_at()
            if due is None:
                self._ack_wanted.clear()
            elif due > loop.time():
                await asyncio.sleep(due - loop.time())
            else:
                self._ack_wanted.clear()
                await self._send_ack(ws)

    async def _send_ack(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(envelope.encode_ack(self._inbox.ack()))

    def _finish(self, ended: SessionEnded) -> None:
        if self._ended is None:
            self._ended = ended
            self._ready = False
            self._incoming.put_nowait(None)
