"""The interface side of the relay: an ASGI app (served by Daphne) that owns no project code.

For each WebSocket connection or HTTP request the gateway sends a connect envelope to the shared
work queue ``fleet.connect`` (:mod:`.claims`); the worker that takes it claims the connection,
and from then on client events go to that worker's channel and the app's messages come back on
this process's channel, in order, through the relay (:mod:`..relay.side`).

    gateway = Gateway(InterfaceSettings.from_env())
    await gateway.start()                # before serving (Daphne has no lifespan)
    server = daphne.server.Server(gateway, ...)

Edge failures never reach the client as a traceback: no worker in time or a full work queue
closes a WebSocket with 1013 (HTTP 503), a drain with 1001 (a resumable session's gets ``B``
first: :mod:`.drain`). When the worker that owns a WebSocket
drains or dies, the socket is re-homed (:mod:`.rehome`); its ``websocket.accept`` is not sent
again (``CHANNELS_FLEET_REHOME=off``: closed with 1012). HTTP requests of a dead worker get 503.
So do the connections of a gateway that finds it was itself declared dead (it stalled): to it,
every owner is dead.

The gateway reads the clients and relays their events; the rest has a home of its own: the
connections (:class:`~.client.Connections`, with each one's state), the claims (:mod:`.claims`),
the writing to clients (:class:`~.edge.ClientWriter`), the owners' items (:mod:`.owner_items`)
and an owner's loss (:mod:`.rehome`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, cast

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPRequestEvent

from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.liveness import Liveness
from ..relay.relay import relay_layer
from ..relay.sessions import SessionRegistry
from ..relay.side import RelaySide
from .claims import Claims, refusal_code
from .client import DETACHED, FINISHED, ClientConn, ClientEvent, Connections
from .drain import drain_sockets
from .edge import ClientWriter
from .inbox import Inboxes
from .limits import ClientLimit, client_key, origin_allowed, refuse
from .owner_items import OwnerItems
from .proxy import TrustedProxies
from .rehome import Rehoming
from .resumable import ResumableSockets
from .resume_offer import negotiate, resume_key
from .settings import InterfaceSettings

logger = logging.getLogger(__name__)

_MESSAGES_IN = METRICS.messages.labels("in")  # looked up once: labels() takes a lock
#: A drain stops waiting for its B'd sockets' resumes this long before its deadline: the 1001
#: closes, the owners' DETACH and the relay's flush still have to go out.
_BACK_MARGIN_S = 1.5


class Gateway:
    """The interface's ASGI application. One instance per process."""

    def __init__(self, settings: InterfaceSettings, layer: Any = None,
                 liveness: Liveness | None = None) -> None:
        self.settings = settings
        self.conns = Connections(lambda conn: self.sessions.client_acked(conn), self._pass_on)
        if layer is None:
            layer = relay_layer(settings, connect_capacity=settings.connect_capacity)
        # The owner-loss callbacks name self.rehoming late: it needs the side built first.
        self.side = RelaySide(
            layer, wire.INTERFACE_CHANNELS, settings,
            on_undeliverable=lambda dest, items: self.items.on_undeliverable(dest, items),
            peers=self.conns.owners, on_dead=lambda dead: self.rehoming.owners_died(dead),
            on_lost=lambda: self.rehoming.declared_dead(), liveness=liveness,
        )
        self.relay = self.side.relay  # the hot path posts straight to it
        self.writer = ClientWriter(settings.send_buffer, self.side.tasks)
        self.claims = Claims(self.side, settings, self.conns, self.writer)
        self.rehoming = Rehoming(self.side, settings, self.conns, self.claims, self.writer,
                                 self._end_detached)
        self.inboxes = Inboxes(settings, deliver=self._channel_message)
        self.items = OwnerItems(self.conns, self.claims, self.writer, self.inboxes,
                                self._end_detached)
        self.resume_key = resume_key(settings.resume_key)  # None: every socket is plain
        self.sessions = ResumableSockets(
            self.resume_key, SessionRegistry(layer, settings.key_prefix), self.conns,
            self.claims, self.writer, self.side, connect=self._connect, to_owner=self._to_owner,
            end=self._spawn_end_telling, home=lambda conn: self.inboxes.name(conn.id),
            end_detached=self._end_detached)
        self.side.handle({
            wire.CLAIM: self.claims.on_claim, wire.SEND: self.items.on_send,
            wire.END: self.items.on_end, wire.RELEASE: self.items.on_release,
            wire.REHOME: self.rehoming.on_rehome, wire.RETURN: self.rehoming.on_return,
            wire.ACK: self.conns.on_ack, wire.CAUGHT_UP: self.rehoming.on_caught_up,
            wire.INBOX: self.items.on_inbox, wire.KEPT: self.items.on_kept,
            **self.sessions.handlers(),
        })
        self.limits = ClientLimit(settings.max_connections_per_client)
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)
        self._ids = itertools.count(1)
        self._id_prefix = ""
        self._started = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        channel = await self.side.start()
        self._id_prefix = channel.rsplit("!", 1)[-1][:12]
        self.inboxes.start(channel)
        self._started.set()
        logger.info("gateway relaying on %s", channel)

    def _pass_on(self, forwarder: str, counts: list[Any], owner: str) -> bool:
        """ACK counts ``owner``'s app sent here for ``forwarder`` (Connections.on_ack)."""
        if forwarder == self.side.channel:
            return False
        self.relay.post(forwarder, [wire.ACK, owner, counts], control=True)
        return True

    async def stop(self) -> None:
        await self.inboxes.close()
        await self.side.stop()

    async def ready(self) -> tuple[bool, str]:
        """Readiness: not draining, its own inbox answers (RelaySide.ready)."""
        return self.side.ready()

    async def drain(self, timeout: float) -> int:
        """Tell every socket to go, paced (a session's client B, to resume elsewhere; others
        a 1001 close, the owner told); wait for HTTP in flight. Returns the 1001 closes."""
        self.side.draining = True
        METRICS.drain_started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sockets = [c for c in self.conns.values() if c.ws and c.state is not DETACHED]
        closed = await drain_sockets(
            sockets, self.settings.drain_close_rate, timeout, deadline - _BACK_MARGIN_S,
            send_back=self.sessions.send_back, end=self._end_telling)
        pending = [c.responded for c in self.conns.values()
                   if not c.ws and c.responded is not None]
        if pending:
            await asyncio.wait(pending, timeout=max(0.1, deadline - loop.time() - 1))
        for conn in self.conns.values():
            if conn.state is not DETACHED:  # no socket, a live session: relays to the end
                await self._end_telling(conn, 1001)
        await self.inboxes.stop_pulling()  # what comes now stays in the LIST, for an adopter
        await self.side.tasks.wait(max(0.1, deadline - loop.time() - 0.5))
        await self.side.flushed(max(0.1, deadline - loop.time()))
        return closed

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceiveCallable,
                       send: ASGISendCallable) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await lifespan(receive, send)
            return
        await self._started.wait()
        scope = self.proxies.resolve(scope)
        client = client_key(scope)
        if not self.limits.acquire(client, scope):
            await refuse(scope, receive, send)
            return
        ws = kind == "websocket"
        conn = ClientConn(f"{self._id_prefix}.{next(self._ids):x}", ws, send, scope,
                          self.rehoming.unacked() if ws else None)
        if conn.unacked is not None:  # re-homed sockets keep their consumer's channel
            conn.channel = self.inboxes.name(conn.id)
        try:
            if conn.ws:
                await self._websocket(conn, scope, receive)
            elif kind == "http":
                await self._http(conn, scope, receive)
        except asyncio.CancelledError:
            # Daphne cancels app instances at shutdown: the owner must still hear of it.
            self.claims.tell_leaving(conn, 1001)
            raise
        except Exception as exc:
            logger.error("gateway error on %s %s: %r", conn.id, scope.get("path"), exc)
            self.claims.tell_gone(conn, 1011)
            await self.writer.end(conn, 1011)
        finally:
            self._forget(conn)
            self.limits.release(client)

    async def _websocket(self, conn: ClientConn, scope: dict[str, Any],
                         receive: ASGIReceiveCallable) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        if not origin_allowed(scope, self.settings.allowed_origins):
            logger.info("refused WebSocket %s: origin not allowed", scope.get("path"))
            await self.writer.refuse_handshake(conn)
            return
        offer = None
        if self.resume_key is not None:
            offer, conn.scope = negotiate(conn.scope, self.resume_key)
        if not await (self._connect(conn) if offer is None else self.sessions.open(conn, offer)):
            return
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                code, superseded = event.get("code", 1006), conn.state is DETACHED
                back = conn.session is not None and conn.session.back  # it answered B: no close
                if conn.session is None or not self.sessions.detach(conn, code):
                    self.claims.tell_gone(conn, code, event)
                if not superseded and (conn.state is DETACHED or conn.finish()) and not back:
                    METRICS.websocket_closed(event.get("code"))
                return
            if conn.state is not FINISHED:
                _MESSAGES_IN.inc()
                if conn.session is None:
                    self._to_owner(conn, event)
                else:
                    self.sessions.from_client(conn, event)

    async def _http(self, conn: ClientConn, scope: dict[str, Any],
                    receive: ASGIReceiveCallable) -> None:
        responded = conn.responded = asyncio.get_running_loop().create_future()
        if not await self._connect(conn):
            return
        limit = self.settings.chunk_size
        more = True
        while more and not conn.finished:
            # Coalesce Daphne's small reads into relay-sized chunks.
            parts: list[bytes] = []
            size = 0
            while True:
                event = await receive()
                if event["type"] == "http.disconnect":
                    self.claims.tell_gone(conn, 1006, event)
                    return
                request = cast(HTTPRequestEvent, event)  # an http scope receives no other
                body = request.get("body", b"")  # both keys optional in the ASGI spec
                parts.append(body)
                size += len(body)
                more = request.get("more_body", False)
                if not more or size >= limit:
                    break
            chunk = {"type": "http.request", "body": b"".join(parts), "more_body": more}
            for part in wire.split_body(chunk, limit):
                self._to_owner(conn, part)
        receiving = asyncio.ensure_future(receive())
        either: list[asyncio.Future[Any]] = [responded, receiving]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if receiving.done() and not responded.done():
                self.claims.tell_gone(conn, 1006, receiving.result())
                conn.finish()
        finally:
            receiving.cancel()

    async def _connect(self, conn: ClientConn) -> bool:
        """Send the connect envelope; False (and the client answered) if it cannot go."""
        if self.side.draining:
            await self.writer.end(conn, 1013)
            return False
        self.conns.add(conn)
        if not await self.claims.send(conn):
            self.conns.discard(conn)
            return False
        METRICS.connection_opened("websocket" if conn.ws else "http")
        return True

    # -- relay: out ------------------------------------------------------------------------

    def _to_owner(self, conn: ClientConn, event: ClientEvent) -> None:
        """One client event for the owner: straight to it once claimed, else held."""
        owner = conn.relay_to()
        if owner is not None:
            if not self.relay.post(owner, [wire.EVENT, conn.claim_id, event]):
                self._backlog_full([conn])
            elif conn.unacked is not None:
                conn.unacked.record(event)  # until the owner acknowledges it
            return
        conn.held.append(event)
        # A socket being re-homed (or a home's session between owners) holds what its consumer
        # is sent too: up to what would be replayed after a crash. Beyond, it is closed.
        moving = conn.rehomed or conn.state is DETACHED
        if len(conn.held) > (self.settings.replay_limit if moving else self.settings.pending_limit):
            logger.warning("%s: %d events held for an owner; closing", conn.id, len(conn.held))
            METRICS.messages_dropped.labels("rehome_hold" if moving else "buffer_full").inc()
            self._spawn_end_telling(conn, refusal_code(conn))

    def _channel_message(self, conn_ids: list[str], body: bytes) -> None:
        """A message sent to consumers' homed channels (inbox.py; a group message names its
        members here): to each connection's owner as a client frame is. Those relayed at once
        share one item per owner, the body in it once."""
        event = {"type": wire.CHANNEL_MESSAGE, "body": body}
        straight: dict[str, list[ClientConn]] = {}
        for conn_id in conn_ids:
            conn = self.conns.get(conn_id)
            if conn is None or conn.channel is None or conn.state is FINISHED:
                continue  # its consumer has gone: dropped, as Channels drops it
            owner = conn.relay_to()
            if owner is not None:
                straight.setdefault(owner, []).append(conn)
                if conn.unacked is not None:
                    conn.unacked.record(event)
            else:
                self._to_owner(conn, event)  # held
        for owner, conns in straight.items():
            if not self.relay.post(owner, [wire.MESSAGE, "", [body, [c.claim_id for c in conns]]]):
                self._backlog_full(conns)

    def _backlog_full(self, conns: list[ClientConn]) -> None:
        """Redis is slower than the clients send: end these connections, buffer nothing."""
        logger.warning("relay backlog full; closing %s", ", ".join(c.id for c in conns[:5]))
        METRICS.messages_dropped.labels("buffer_full").inc(len(conns))
        for conn in conns:
            self._spawn_end_telling(conn, 1013)

    def _forget(self, conn: ClientConn) -> None:
        """The client's socket or request is over: forget the connection, unless it is a
        home's DETACHED one (kept until its session ends: :meth:`_end_detached`)."""
        if conn.state is DETACHED:
            return
        if conn.session is not None:
            conn.session.stop()
        if conn.kept and conn.home:  # else its session's channel is another interface's
            self.side.tasks.spawn(self.inboxes.discard(conn.id, conn.kept), f"leave {conn.id}")
        if self.conns.discard(conn):
            METRICS.connection_ended("websocket" if conn.ws else "http")
        conn.stop_timer()
        conn.mark_responded()

    # -- ending connections, the owner told ------------------------------------------------

    def _end_detached(self, conn: ClientConn) -> None:
        """A home's DETACHED connection goes: its session ended, or its owner died."""
        conn.finish()
        self._forget(conn)

    def _spawn_end_telling(self, conn: ClientConn, code: int) -> None:
        self.side.tasks.spawn(self._end_telling(conn, code), f"end {conn.id}")

    async def _end_telling(self, conn: ClientConn, code: int) -> None:
        """End the client side (close ``code``, HTTP 503 or abort) and tell the owner."""
        if conn.state is DETACHED:
            self._end_detached(conn)  # the owner has its DETACH; no socket to close
        elif conn.state is not FINISHED:
            self.claims.tell_leaving(conn, code)
            await self.writer.end(conn, code)


async def lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Answer the ASGI lifespan protocol (servers other than Daphne use it)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
