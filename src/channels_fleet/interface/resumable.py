"""Resumable sockets at the interface (docs/resume-protocol.md): a new session or a resume, the
client's frames unwrapped, acks to the client, and the worker's session items.

A socket is resumable when the interface has a key (``CHANNELS_FLEET_RESUME_KEY``) and the
client offered ``channels-fleet.resume.v1`` (``resume_offer.negotiate``); every other socket
takes the gateway's plain path, untouched.

- **New session**: a token issued, the connect envelope carries ``"session"``; the app's accept
  selects the protocol and writes the hello first (edge.py), its sends go out as ``D`` frames.
- **Resume**: the registry names the worker holding the session; RESUME goes straight to it
  (``Claims.resume``), the socket not yet accepted. CLAIM then RESUMED: accepted, hello
  ``resumed: true``, the replayed SENDs. NO_SESSION or no answer in time: a new session.
- **Client frames**: ``D`` becomes a ``websocket.receive`` with ``fleet_seq`` (the gateway's
  normal path to the owner), its ack a CLIENT_ACK when it rose; ``A`` only the latter; anything
  else closes 1002 (the session ends).
- **The end of a socket** that does not end the session (no close frame, a library's code, the
  interface's own 1001) is a DETACH to the owner. The home interface (it pops the consumer's
  homed channel) keeps the connection DETACHED until SESSION_END, or its owner's death with no
  worker taking the session over (rehome.py); another interface forgets it. RESUMED names the
  homed channel and its home: a socket resumed here keeps them in its re-homes' envelopes.
  SUPERSEDE (another socket resumed it) closes the socket 4001.
- **A drain** (``Gateway.drain``): an accepted session socket gets ``B`` instead of a close
  (:meth:`ResumableSockets.send_back`); from then on the owner's SENDs are not written (its
  outbox keeps them for the resume elsewhere), the client's frames still go to the owner, and
  SUPERSEDE closes it 4001; one still open at the drain's end is closed 1001 (DETACH).

    sockets = ResumableSockets(settings, conns, claims, writer, side, to_owner=..., ...)
    await sockets.open(conn, offer)        # instead of the plain connect
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..exceptions import WireError
from ..observability.metrics import METRICS
from ..relay import session_items as items
from ..relay.sessions import SessionEntry, SessionRegistry
from ..relay.side import RelaySide
from ..resume.envelope import ACK_AFTER_S, BACK, Ack, Data, ProtocolError, encode_ack, parse
from ..resume.envelope import client_close_ends_session as ends_session
from ..resume.token import SessionKey
from .claims import Claims
from .client import AWAITING_CLAIM, CLAIMED, DETACHED, ClientConn, ClientEvent, Connections
from .edge import ClientWriter
from .resume_offer import ResumeOffer
from .session import SocketSession

logger = logging.getLogger(__name__)


class ResumableSockets:
    """The resumable sockets of one gateway."""

    def __init__(self, key: SessionKey | None, registry: SessionRegistry, conns: Connections,
                 claims: Claims, writer: ClientWriter, side: RelaySide, *,
                 connect: Callable[[ClientConn], Awaitable[bool]],
                 to_owner: Callable[[ClientConn, ClientEvent], None],
                 end: Callable[[ClientConn, int], None],
                 home: Callable[[ClientConn], str],
                 end_detached: Callable[[ClientConn], None]) -> None:
        self.key = key  # None: resume is off, and nothing here is called
        self.registry = registry
        self.conns = conns
        self.claims = claims
        self.writer = writer
        self.side = side
        self._connect = connect  # the gateway's: add, send the envelope, or answer the client
        self._to_owner = to_owner  # the gateway's path of a client event to the owner
        self._end = end  # end the client side with a code, the owner told (a task)
        self._home = home  # the homed channel of a connection (inbox.py)
        self._end_detached = end_detached  # finish and forget a DETACHED connection

    def handlers(self) -> dict[str, Any]:
        """The worker's session items this side takes."""
        return {items.RESUMED: self.on_resumed, items.NO_SESSION: self.on_no_session,
                items.SUPERSEDE: self.on_supersede, items.SESSION_END: self.on_session_end}

    # -- the handshake ---------------------------------------------------------------------

    async def open(self, conn: ClientConn, offer: ResumeOffer) -> bool:
        """A resumable socket's start: resume the offered session, else a new one. False if
        the client was answered already (refused)."""
        if self.side.draining:
            return await self._connect(conn)  # refused there: 1013
        if offer.forged:
            METRICS.resume_refused.labels("forged").inc()
        entry = await self._entry(offer.session_id) if offer.session_id else None
        if offer.session_id and entry is None:
            METRICS.resume_refused.labels("unknown").inc()
        if entry is None or offer.token is None:
            return await self._connect(self._new_session(conn))
        conn.session = SocketSession(offer.session_id or "", offer.token, seq=offer.last,
                                     resuming=True)
        conn.channel = None  # homed where the session began: RESUMED names it
        self.conns.add(conn)
        METRICS.connection_opened("websocket")
        self.claims.resume(conn, entry, offer.last, offer.origin, self._resume_expired)
        return True

    async def _entry(self, session_id: str) -> SessionEntry | None:
        try:
            return await self.registry.get(session_id)
        except Exception as exc:  # Redis away: a new session rather than a refusal
            logger.warning("session registry unreadable (%r): a new session instead", exc)
            return None

    def _new_session(self, conn: ClientConn) -> ClientConn:
        """Issue a new session for ``conn`` (its envelope carries it), homed here."""
        assert self.key is not None  # only a resumable socket gets here
        session_id, token = self.key.issue()
        conn.session = SocketSession(session_id, token)
        conn.channel = self._home(conn)
        METRICS.sessions_started.inc()
        return conn

    def _instead(self, conn: ClientConn, reason: str) -> None:
        """The resume is refused (``reason``): a new session, a new envelope."""
        METRICS.resume_refused.labels(reason).inc()
        if conn.session is not None:
            conn.session.stop()
        self.side.tasks.spawn(self.claims.send(self._new_session(conn)), f"session {conn.id}")

    def _resume_expired(self, conn: ClientConn) -> None:
        conn.timer = None
        if conn.state is AWAITING_CLAIM and conn.session is not None and conn.session.resuming:
            logger.info("%s: no answer to its resume in time; a new session", conn.id)
            self._instead(conn, "timeout")

    # -- the worker's items ----------------------------------------------------------------

    async def on_resumed(self, claim: str, payload: list[Any], sender: str) -> None:
        conn = self.conns.current(claim)
        if (conn is None or conn.session is None or not conn.session.resuming
                or conn.state not in CLAIMED):
            return
        try:
            ack, protocol, channel, home, home_claim = items.parse_resumed(payload)
        except WireError as exc:
            logger.warning("ignored a resumed item from %s: %s", sender, exc)
            return
        # The homed channel stays at the session's home: a re-home's envelope carries it,
        # and the home, so the next owner keeps both (the home re-points its connection).
        conn.channel = channel or None
        conn.session.resumed(ack, home, home_claim)
        METRICS.sessions_resumed.inc()
        await self.writer.resumed(conn, protocol)

    async def on_no_session(self, claim: str, reason: str, sender: str) -> None:
        conn = self.conns.current(claim)
        if conn is None or conn.state is not AWAITING_CLAIM or conn.session is None:
            return
        logger.info("%s: session not resumed (%s); a new session", conn.id, reason[:40])
        conn.stop_timer()
        self._instead(conn, reason if reason in items.NO_SESSION_REASONS else "unknown")

    async def on_supersede(self, claim: str, code: int, sender: str) -> None:
        """Another socket resumed the session: this one closes 4001, telling nobody; the home
        keeps the connection for the homed channel's messages."""
        conn = self.conns.current(claim)
        if conn is None or conn.session is None or conn.state not in CLAIMED:
            return
        conn.take_owner_to_tell()  # nothing on this socket affects the session from here
        conn.session.stop()
        if conn.home:
            conn.detach()
        else:
            conn.finish()
        await self.writer.superseded(conn)

    async def on_session_end(self, claim: str, payload: list[Any], sender: str) -> None:
        """The session is over (the app returned, its window or buffer ran out): the home's
        detached connection goes. An attached socket ends by its app's close (or END)."""
        conn = self.conns.current(claim)
        if conn is not None and conn.state is DETACHED:
            self._end_detached(conn)

    # -- the interface's drain -------------------------------------------------------------

    async def send_back(self, conn: ClientConn) -> bool:
        """The interface drains: tell an accepted session socket's client to resume elsewhere
        (B). False for any other socket: it is closed 1001 instead."""
        session = conn.session
        if session is None or not conn.accepted or conn.state not in CLAIMED:
            return False
        session.sent_back()
        await self.writer.control(conn, BACK)
        return True

    # -- the client's frames ---------------------------------------------------------------

    def from_client(self, conn: ClientConn, event: ClientEvent) -> None:
        """One message of a session's client: unwrapped to the owner, or 1002."""
        session = conn.session
        assert session is not None
        if conn.state is DETACHED:
            return  # superseded: what it sends now is not the session's
        raw = event.get("text")
        try:
            message = parse(raw if raw is not None else event.get("bytes") or b"",
                            from_server=False)
            if not isinstance(message, Data | Ack):
                raise ProtocolError(f"a client sent {type(message).__name__}")
            if message.ack > session.seq:
                raise ProtocolError(f"ack {message.ack} of a frame never sent ({session.seq})")
        except ProtocolError as exc:
            logger.info("%s: protocol error (%s); closing 1002", conn.id, exc)
            self._end(conn, 1002)
            return
        if isinstance(message, Data):
            kind = "text" if isinstance(message.payload, str) else "bytes"
            self._to_owner(conn, {"type": "websocket.receive", kind: message.payload,
                                  items.FLEET_SEQ: message.seq})
        owner = conn.relay_to()
        if owner is not None and session.peer_acked(message.ack):
            self.side.relay.post(owner, [items.CLIENT_ACK, conn.claim_id, message.ack])

    def detach(self, conn: ClientConn, code: int) -> bool:
        """The client's socket ended with ``code``: True if the session lives on (the owner
        told DETACH; the home keeps the connection), False if it ends as a plain socket's."""
        if conn.state is DETACHED:
            return True  # superseded already: its end is nobody's business
        if ends_session(code) or conn.state not in CLAIMED:
            return False
        self.claims.tell_detached(conn, code if 1000 <= code <= 4999 else 1006)
        if conn.session is not None:
            conn.session.stop()
        if conn.home:
            conn.detach()
        return True

    # -- acks to the client ----------------------------------------------------------------

    def client_acked(self, conn: ClientConn) -> None:
        """The owner's app took more of the client's frames: tell the client, paced."""
        session = conn.session
        if session is None or not conn.accepted or conn.state is DETACHED or session.back:
            return
        if session.ack_due():
            self._tell_ack(conn, session)
        elif session.timer is None:
            session.timer = asyncio.get_running_loop().call_later(
                ACK_AFTER_S, self._ack_after, conn, session)

    def _ack_after(self, conn: ClientConn, session: SocketSession) -> None:
        session.timer = None
        if session.client_ack > session.told and conn.state in CLAIMED and not session.back:
            self._tell_ack(conn, session)

    def _tell_ack(self, conn: ClientConn, session: SocketSession) -> None:
        session.told = session.client_ack
        self.side.tasks.spawn(self.writer.control(conn, encode_ack(session.told)),
                              f"ack {conn.id}")
