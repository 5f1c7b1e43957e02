"""The interface side of the relay: an ASGI app (served by Daphne) that owns no project code.

For each WebSocket connection or HTTP request the gateway sends a connect envelope to the shared
work queue ``fleet.connect`` (:mod:`.claims`); the worker that takes it claims the connection,
and from then on client events go to that worker's channel and the app's messages come back on
this process's channel, in order, through the relay (:mod:`..relay.side`).

    gateway = Gateway(InterfaceSettings.from_env())
    await gateway.start()                # before serving (Daphne has no lifespan)
    server = daphne.server.Server(gateway, ...)

Edge failures never reach the client as a traceback: no worker in time or a full work queue
closes a WebSocket with 1013 (HTTP 503), a drain with 1001. When the worker that owns a WebSocket
drains or dies, the socket is re-homed (:mod:`.rehome`); its ``websocket.accept`` is not sent
again (``CHANNELS_FLEET_REHOME=off``: closed with 1012). HTTP requests of a dead worker get 503.
So do the connections of a gateway that finds it was itself declared dead (it stalled): to it,
every owner is dead.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.liveness import Liveness
from ..relay.relay import relay_layer
from ..relay.side import RelaySide
from . import edge
from .claims import Claims
from .client import AWAITING_CLAIM, FINISHED, OWNED, REHOMING, ClientConn
from .limits import ClientLimit, client_key, close_pacing, refuse
from .proxy import TrustedProxies
from .rehome import Rehoming
from .replay import AckHandler
from .settings import InterfaceSettings

logger = logging.getLogger(__name__)

# Per-message counters, looked up once (labels() takes a lock on every call).
_MESSAGES_IN = METRICS.messages.labels("in")
_MESSAGES_OUT = METRICS.messages.labels("out")


class Gateway:
    """The interface's ASGI application. One instance per process."""

    def __init__(self, settings: InterfaceSettings, layer: Any = None,
                 liveness: Liveness | None = None) -> None:
        self.settings = settings
        self.conns: dict[str, ClientConn] = {}
        if layer is None:
            layer = relay_layer(settings, connect_capacity=settings.connect_capacity)
        self.side = RelaySide(
            layer, wire.INTERFACE_CHANNELS, settings, on_undeliverable=self._on_undeliverable,
            peers=self._owners, on_dead=self._owners_dead, on_lost=self._declared_dead,
            liveness=liveness,
        )
        self.relay = self.side.relay  # the hot path posts straight to it
        self.claims = Claims(self.side, settings, self.conns)
        self.rehoming = Rehoming(self.side, self.claims)
        self.side.handle({
            wire.CLAIM: self._on_claim, wire.SEND: self._on_send, wire.END: self._on_end,
            wire.RELEASE: self._on_release, wire.REHOME: self.rehoming.on_rehome,
            wire.RETURN: self.rehoming.on_return, wire.ACK: AckHandler(self.claims.current),
            wire.CAUGHT_UP: self._on_caught_up,
        })
        self.limits = ClientLimit(settings.max_connections_per_client)
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)
        self._ids = itertools.count(1)
        self._id_prefix = ""
        self._started = asyncio.Event()
        self._lost_marks = itertools.count(1)
        self._lost_mark: int | None = None  # declared dead: the mark to act on, once

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        channel = await self.side.start()
        self._id_prefix = channel.rsplit("!", 1)[-1][:12]
        self._started.set()
        logger.info("gateway relaying on %s", channel)

    async def stop(self) -> None:
        await self.side.stop()

    async def ready(self) -> tuple[bool, str]:
        """Readiness: not draining, its own inbox answers (RelaySide.ready)."""
        return self.side.ready()

    async def drain(self, timeout: float) -> int:
        """Close every socket with 1001 and tell the owners; wait for HTTP in flight."""
        self.side.draining = True
        METRICS.drain_started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sockets = [conn for conn in self.conns.values() if conn.ws]
        batch, pause = close_pacing(len(sockets), self.settings.drain_close_rate, timeout)
        for start in range(0, len(sockets), batch):
            if start:
                await asyncio.sleep(pause)
            for conn in sockets[start:start + batch]:
                await self._end(conn, 1001, tell_owner=True)
        closed = len(sockets)
        pending = [c.done for c in self.conns.values() if not c.ws and c.done is not None]
        if pending:
            await asyncio.wait(pending, timeout=max(0.1, deadline - loop.time() - 1))
        for conn in list(self.conns.values()):
            await self._end(conn, 1001, tell_owner=True)
        await self.side.tasks.wait(max(0.1, deadline - loop.time() - 0.5))
        await self.side.flushed(max(0.1, deadline - loop.time()))
        return closed

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await edge.lifespan(receive, send)
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
        try:
            if conn.ws:
                await self._websocket(conn, scope, receive)
            elif kind == "http":
                await self._http(conn, scope, receive)
        except asyncio.CancelledError:
            # Daphne cancels app instances at shutdown: the owner must still hear of it.
            self._tell_gone(conn, 1001)
            raise
        except Exception as exc:
            logger.error("gateway error on %s %s: %r", conn.id, scope.get("path"), exc)
            self._tell_gone(conn, 1011)
            await self._end(conn, 1011, tell_owner=False)
        finally:
            self._forget(conn)
            self.limits.release(client)

    async def _websocket(self, conn: ClientConn, scope: dict[str, Any], receive: Any) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        if not edge.origin_allowed(scope, self.settings.allowed_origins):
            logger.info("refused WebSocket %s: origin not allowed", scope.get("path"))
            await conn.send({"type": "websocket.close"})  # before accept: HTTP 403
            return
        if not await self._connect(conn):
            return
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                self._tell_gone(conn, event.get("code", 1006), event)
                if conn.finish():
                    METRICS.websocket_closed(event.get("code"))
                return
            if conn.state is not FINISHED:
                _MESSAGES_IN.inc()
                self._to_owner(conn, event)

    async def _http(self, conn: ClientConn, scope: dict[str, Any], receive: Any) -> None:
        conn.done = asyncio.get_running_loop().create_future()
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
                    self._tell_gone(conn, 1006, event)
                    return
                body = event.get("body", b"")
                parts.append(body)
                size += len(body)
                more = event.get("more_body", False)
                if not more or size >= limit:
                    break
            chunk = {"type": "http.request", "body": b"".join(parts), "more_body": more}
            for part in wire.split_body(chunk, limit):
                self._to_owner(conn, part)
        receiving = asyncio.ensure_future(receive())
        try:
            await asyncio.wait([conn.done, receiving], return_when=asyncio.FIRST_COMPLETED)
            if receiving.done() and not conn.done.done():
                self._tell_gone(conn, 1006, receiving.result())
                conn.finish()
        finally:
            receiving.cancel()

    async def _connect(self, conn: ClientConn) -> bool:
        """Send the connect envelope; False (and the client answered) if it cannot go."""
        if self.side.draining:
            await self._end(conn, 1013, tell_owner=False)
            return False
        self.conns[conn.id] = conn
        if not await self.claims.send(conn):
            self.conns.pop(conn.id, None)
            return False
        METRICS.connection_opened("websocket" if conn.ws else "http")
        return True

    # -- relay: out ------------------------------------------------------------------------

    def _to_owner(self, conn: ClientConn, event: dict[str, Any]) -> None:
        """One client event for the owner: straight to it once claimed, else held."""
        state, owner = conn.state, conn.owner
        if owner is not None and (state is OWNED or state is REHOMING):
            if not self.relay.post(owner, [wire.EVENT, conn.claim_id, event]):
                logger.warning("%s: relay backlog full; closing", conn.id)
                METRICS.messages_dropped.labels("buffer_full").inc()
                self._spawn_end(conn, 1013, tell_owner=True)
            elif conn.unacked is not None:
                conn.unacked.record(event)  # until the owner acknowledges it
            return
        conn.held.append(event)
        if len(conn.held) > self.settings.pending_limit:
            logger.warning("%s: %d events held for an owner; closing", conn.id, len(conn.held))
            METRICS.messages_dropped.labels("buffer_full").inc()
            self._spawn_end(conn, 1013, tell_owner=False)

    def _tell_gone(self, conn: ClientConn, code: int, event: dict[str, Any] | None = None) -> None:
        """Tell the owner (once) that the client side of ``conn`` is over."""
        if conn.told:
            return
        conn.told = True
        if conn.owner is None:
            return  # a claim arriving later is answered with GONE (Claims.on_claim)
        if event is not None:
            self.relay.post(conn.owner, [wire.EVENT, conn.claim_id, event], control=True)
        else:
            self.relay.post(conn.owner, [wire.GONE, conn.claim_id, code], control=True)

    def _forget(self, conn: ClientConn) -> None:
        if self.conns.pop(conn.id, None) is not None:
            METRICS.connection_ended("websocket" if conn.ws else "http")
        conn.stop_timer()
        conn.complete()

    # -- relay: in -------------------------------------------------------------------------

    # Every item names a claim (wire.claim_id): one of an earlier claim (a worker the socket
    # was re-homed away from, or the same worker's earlier app instance) is ignored.

    async def _on_claim(self, claim: str, owner: str, sender: str) -> None:
        self.claims.on_claim(claim, owner)

    async def _on_send(self, claim: str, message: dict[str, Any], sender: str) -> None:
        conn = self.claims.current(claim)
        if conn is not None:
            try:
                await self._write(conn, message)
            except Exception as exc:
                # Daphne refused it (a worker that does not check what apps send): end the
                # connection (500, a cut response or 1011) rather than write what follows.
                logger.error("%s %s: the server refused the app's %s (%r); ending it", conn.id,
                             conn.scope.get("path"), message.get("type"), exc)
                if conn.finish():
                    self._tell_gone(conn, 1011)
                    edge.fail(conn.send)
                    conn.complete()

    async def _on_release(self, claim: str, code: int, sender: str) -> None:
        conn = self.claims.current(claim)
        if conn is not None:
            conn.told = True
            await self._end(conn, code, tell_owner=False)

    async def _on_end(self, claim: str, _: None, sender: str) -> None:
        conn = self.claims.current(claim)
        if conn is not None:
            # The app finished without ending the connection: what Daphne does on a crash.
            await self._end(conn, 1011, tell_owner=False)

    async def _write(self, conn: ClientConn, message: dict[str, Any]) -> None:
        """Write one of the app's messages to the client."""
        kind = message["type"]
        if not conn.ws:
            if kind == "http.response.start":
                conn.accepted = True
            await conn.send(message)
            if kind == "http.response.body" and not message.get("more_body", False):
                conn.finish()
                conn.complete()
            return
        if kind == "websocket.send":
            _MESSAGES_OUT.inc()
            if not edge.write_message(conn.send, message):
                await conn.send(message)
            if edge.unsent_bytes(conn.send) > self.settings.send_buffer:
                logger.warning("%s: client is not reading; disconnecting", conn.id)
                METRICS.messages_dropped.labels("buffer_full").inc()
                conn.finish()
                self._tell_gone(conn, 1006)
                edge.abort(conn.send)
        elif kind == "websocket.accept":
            await self._accepted(conn, message)
        elif kind == "websocket.http.response.start" and not conn.accepted:
            # The app failed before accepting (host.py): refused with its status, 500 for a
            # crash (as Daphne) or 404 for an unknown path.
            conn.finish()
            METRICS.websocket_closed(1011)
            await edge.deny(conn.send, message.get("status", 500))
        elif kind == "websocket.close":
            await self._closed_by_app(conn, message)
        else:
            await conn.send(message)  # an ASGI extension this gateway leaves to the server

    async def _accepted(self, conn: ClientConn, message: dict[str, Any]) -> None:
        if conn.rehomed and not conn.app_accepted:
            METRICS.rehome_gap.observe(time.monotonic() - conn.handover_at)
        conn.app_accepted = True
        if conn.state is REHOMING:
            conn.move(OWNED)
        if conn.accepted:
            return  # a re-homed socket: the client has its accept already
        conn.accepted = True
        conn.subprotocol = message.get("subprotocol")
        await edge.accept(conn.send, message)

    async def _closed_by_app(self, conn: ClientConn, message: dict[str, Any]) -> None:
        refused_rehome = conn.rehomed and not conn.app_accepted and conn.accepted
        conn.finish()
        code = message.get("code") or 1000
        if refused_rehome:
            # Refused on re-home (what is HTTP 403 at a first connect): the socket is open
            # already, so it gets a close frame, 1008 unless the app gave a code.
            code = message.get("code") or 1008
            message = {**message, "code": code}
            logger.info("%s: the app refused the re-homed connection (%d)", conn.id, code)
        METRICS.websocket_closed(code)
        await edge.close(conn.send, message, accepted=conn.accepted)

    def _on_undeliverable(self, dest: str, items: list[list[Any]]) -> None:
        for claim in {item[1] for item in items}:
            conn = self.claims.current(claim)
            if conn is not None:
                METRICS.messages_dropped.labels("channel_full").inc()
                self._spawn_end(conn, 1013, tell_owner=False)

    # -- liveness --------------------------------------------------------------------------

    def _owners(self) -> set[str]:
        owners: set[str] = set()
        for c in self.conns.values():
            if c.state is not FINISHED:
                owners.update(w for w in (c.owner, c.fence) if w)
        return owners

    def _owners_dead(self, dead: set[str]) -> None:
        self.claims.worker_died()
        rehome = self.settings.rehome and not self.side.draining
        for conn in list(self.conns.values()):
            if conn.state is FINISHED:
                continue
            if conn.owner in dead:
                if conn.ws and rehome and not self.settings.keeps_session(conn.subprotocol):
                    self.rehoming.rehome(conn, "dead")
                else:
                    METRICS.messages_dropped.labels("dead_owner").inc()
                    conn.told = True  # nobody to tell
                    self._spawn_end(conn, 1012, tell_owner=False)
            if conn.fence in dead:
                # What it held died with it: what it had not acknowledged is replayed instead.
                # (After the owner's re-home: held events wait for the next owner.)
                self.claims.unfence(conn)

    def _declared_dead(self) -> None:
        """Our heartbeat lapsed (a stall: CPU starvation, a pause, a partition) and the owners
        dropped our connections: to us they are dead owners. Their last ACKs may be waiting in
        our channel (sent while we stalled): a mark sent through it comes back after them, so
        what the apps handled is not replayed. Should it not come back, the TTL acts for it."""
        mark = self._lost_mark = next(self._lost_marks)
        self.relay.post(self.relay.channel, [wire.CAUGHT_UP, "", mark], control=True)
        asyncio.get_running_loop().call_later(
            self.settings.heartbeat_ttl, self._rehome_all_lost, mark)

    async def _on_caught_up(self, _: str, mark: int, sender: str) -> None:
        if sender == self.relay.channel:
            self._rehome_all_lost(mark)

    def _rehome_all_lost(self, mark: int) -> None:
        """The sockets are still open here, so they are re-homed as for an owner that died;
        what cannot be is closed 1012."""
        if mark != self._lost_mark:
            return  # acted on already
        self._lost_mark = None
        owners = self._owners()
        for conn in list(self.conns.values()):
            if conn.state is FINISHED:
                continue
            if conn.owner is not None:
                # An owner that had not declared us dead yet still runs the app: end it there
                # (the others dropped it already). Its END names a claim past by then.
                self.relay.post(conn.owner, [wire.GONE, conn.claim_id, 1006], control=True)
            elif conn.state is AWAITING_CLAIM:
                # Its claim may come from a worker that took the envelope and then dropped it
                # with our other connections: ask again, as a new claim.
                self.side.tasks.spawn(self.claims.send(conn), f"connect again {conn.id}")
        self._owners_dead(owners)

    # -- ending connections ----------------------------------------------------------------

    def _spawn_end(self, conn: ClientConn, code: int, *, tell_owner: bool) -> None:
        self.side.tasks.spawn(self._end(conn, code, tell_owner=tell_owner), f"end {conn.id}")

    async def _end(self, conn: ClientConn, code: int, *, tell_owner: bool) -> None:
        """End the client side (close ``code``, HTTP 503 or abort), telling the owner or not."""
        if conn.state is FINISHED:
            return
        if tell_owner:
            self._tell_gone(conn, code)
        await conn.end(code)
