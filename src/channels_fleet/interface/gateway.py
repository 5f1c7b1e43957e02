"""The interface side of the relay: an ASGI app (served by Daphne) that owns no project code.

For each WebSocket connection or HTTP request the gateway sends a connect envelope to the shared
work queue ``fleet.connect``; the worker that takes it claims the connection, and from then on
client events go to that worker's channel and the app's messages come back on this process's
channel, in order, through :class:`channels_fleet.relay.relay.Relay`.

    gateway = Gateway(InterfaceSettings.from_env())
    await gateway.start()                # before serving (Daphne has no lifespan)
    server = daphne.server.Server(gateway, ...)

Edge failures never reach the client as a traceback: no worker in time or a full work queue
closes a WebSocket with 1013 (HTTP 503), a drain with 1001. When the worker that owns a WebSocket
drains or dies, the socket is re-homed (``interface/rehome.py``); its ``websocket.accept``
is not sent again (``CHANNELS_FLEET_REHOME=off``: closed with 1012). HTTP requests of a dead
worker get 503.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from channels.exceptions import ChannelFull

from ..observability.metrics import METRICS, close_code_label
from ..relay import wire
from ..relay.relay import Relay, RelayEndpoint, relay_layer
from . import edge
from .limits import ClientLimit, client_key, refuse
from .proxy import TrustedProxies
from .rehome import REHOME_CLAIM_FACTOR, Rehoming
from .settings import InterfaceSettings

logger = logging.getLogger(__name__)

Send = Any

# Per-message counters, looked up once (labels() takes a lock on every call).
_MESSAGES_IN = METRICS.messages.labels("in")
_MESSAGES_OUT = METRICS.messages.labels("out")


class Conn:
    """One client connection as the interface sees it."""

    __slots__ = (
        "id", "ws", "send", "owner", "held", "accepted", "finished", "told", "done",
        "sent_at", "timer", "scope", "rehomed", "rehoming", "handover_at", "fence",
        "unanswered", "resent", "pinned",
    )

    def __init__(self, conn_id: str, ws: bool, send: Send, scope: dict[str, Any]) -> None:
        self.id = conn_id
        self.ws = ws
        self.send = send
        self.scope = scope  # Daphne's own scope object: kept for re-homing, costs nothing
        self.owner: str | None = None
        # Events held until the owner can take them (before a claim, during a re-home); None
        # while they go straight to the owner.
        self.held: list[dict[str, Any]] | None = []
        self.accepted = False  # ws: accepted; http: response started
        self.finished = False  # the interface has ended the client side (close / 503 / done)
        self.told = False  # the owner has been told the client is gone
        self.done: asyncio.Future[None] | None = None  # http: response complete
        self.sent_at = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.rehomed = 0  # times handed to a new owner
        self.rehoming = False  # handed over; the new owner's app has not accepted yet
        self.handover_at = 0.0  # monotonic time the last hand-over began
        self.fence: str | None = None  # old owner whose RETURN (held events) is awaited
        self.unanswered = 0  # events sent to the owner since its last message for this conn
        self.resent = False  # its connect envelope went out a second time
        self.pinned = False  # its subprotocol keeps session state in the app: never re-homed


class Gateway:
    """The interface's ASGI application. One instance per process."""

    def __init__(self, settings: InterfaceSettings, layer: Any = None) -> None:
        self.settings = settings
        self.layer = layer
        self.conns: dict[str, Conn] = {}
        self.endpoint: RelayEndpoint | None = None
        self.relay: Relay | None = None
        self.draining = False
        self.limits = ClientLimit(settings.max_connections_per_client)
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)
        self.rehoming = Rehoming(self)
        self._worker_died_at = 0.0  # monotonic time a worker was last found dead
        self._ids = itertools.count(1)
        self._id_prefix = ""
        self._started = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        if self.layer is None:
            self.layer = relay_layer(s, connect_capacity=s.connect_capacity)
        self.endpoint = RelayEndpoint(
            self.layer, "fleet.iface", self._on_item, self._on_undeliverable, settings=s,
            peers=self._owners, on_dead=self._owners_dead, on_lost=self._abandon_all,
        )
        self.relay = self.endpoint.relay
        channel = await self.endpoint.start()
        self._id_prefix = channel.rsplit("!", 1)[-1][:12]
        self._started.set()
        logger.info("gateway relaying on %s", channel)

    async def stop(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.stop()

    async def ready(self) -> tuple[bool, str]:
        """Readiness: not draining, heartbeat fresh (so the layer's Redis answers)."""
        if self.draining:
            return False, "draining"
        heartbeat = self.endpoint.heartbeat if self.endpoint is not None else None
        if heartbeat is None or not heartbeat.fresh:
            return False, "heartbeat stale (Redis unreachable?)"
        return True, "ok"

    async def drain(self, timeout: float) -> int:
        """Close every socket with 1001 and tell the owners; wait for HTTP in flight."""
        self.draining = True
        METRICS.draining.set(1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        closed = 0
        for conn in list(self.conns.values()):
            if conn.ws:
                await self._end(conn, 1001, tell_owner=True)
                closed += 1
        pending = [c.done for c in self.conns.values() if not c.ws and c.done is not None]
        if pending:
            await asyncio.wait(pending, timeout=max(0.1, deadline - loop.time() - 1))
        for conn in list(self.conns.values()):
            await self._end(conn, 1001, tell_owner=True)
        if self.relay is not None:
            await self.relay.flushed(max(0.1, deadline - loop.time()))
        return closed

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
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
        conn = Conn(f"{self._id_prefix}.{next(self._ids):x}", kind == "websocket", send, scope)
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

    async def _websocket(self, conn: Conn, scope: dict[str, Any], receive: Any) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        if not edge.origin_allowed(scope, self.settings.allowed_origins):
            logger.info("refused WebSocket %s: origin not allowed", scope.get("path"))
            await conn.send({"type": "websocket.close"})  # before accept: HTTP 403
            return
        if not await self._connect(conn, scope):
            return
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                self._tell_gone(conn, event.get("code", 1006), event)
                if not conn.finished:
                    conn.finished = True
                    METRICS.closes.labels(close_code_label(event.get("code"))).inc()
                return
            if not conn.finished:
                _MESSAGES_IN.inc()
                self._to_owner(conn, event)

    async def _http(self, conn: Conn, scope: dict[str, Any], receive: Any) -> None:
        conn.done = asyncio.get_running_loop().create_future()
        if not await self._connect(conn, scope):
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
                conn.finished = True
        finally:
            receiving.cancel()

    # -- relay: out ------------------------------------------------------------------------

    async def _connect(self, conn: Conn, scope: dict[str, Any]) -> bool:
        """Send the connect envelope; False (and the client answered) if it cannot go."""
        assert self.relay is not None
        if self.draining:
            await self._end(conn, 1013, tell_owner=False)
            return False
        self.conns[conn.id] = conn
        envelope = wire.connect_envelope(
            self.relay.channel, conn.id, scope, self.settings.claim_timeout
        )
        conn.sent_at = time.monotonic()
        if not await self._enqueue(conn, envelope, "refusing"):
            self.conns.pop(conn.id, None)
            await self._end(conn, 1013, tell_owner=False)
            return False
        METRICS.open_connections.labels("websocket" if conn.ws else "http").inc()
        conn.timer = asyncio.get_running_loop().call_later(
            self.settings.claim_timeout, self._claim_expired, conn
        )
        return True

    async def _enqueue(self, conn: Conn, envelope: dict[str, Any], refusal: str) -> bool:
        """Send a connect envelope to the work queue; False (counted, logged) if it is full."""
        assert self.relay is not None
        try:
            await self.relay.send_now(wire.CONNECT_CHANNEL, envelope)
        except ChannelFull:
            logger.warning("work queue %s full: %s %s", wire.CONNECT_CHANNEL, refusal, conn.id)
            METRICS.channel_full.labels("send").inc()
            METRICS.messages_dropped.labels("channel_full").inc()
            return False
        return True

    def _to_owner(self, conn: Conn, event: dict[str, Any]) -> None:
        if conn.held is None and conn.owner is not None:
            assert self.relay is not None
            conn.unanswered += 1
            if not self.relay.post(conn.owner, [wire.EVENT, conn.id, event]):
                logger.warning("%s: relay backlog full; closing", conn.id)
                METRICS.messages_dropped.labels("buffer_full").inc()
                self._spawn_end(conn, 1013, tell_owner=True)
            return
        assert conn.held is not None
        conn.held.append(event)
        if len(conn.held) > self.settings.pending_limit:
            logger.warning("%s: %d events held for an owner; closing", conn.id, len(conn.held))
            METRICS.messages_dropped.labels("buffer_full").inc()
            self._spawn_end(conn, 1013, tell_owner=False)

    def _tell_gone(self, conn: Conn, code: int, event: dict[str, Any] | None = None) -> None:
        """Tell the owner (once) that the client side of ``conn`` is over."""
        if conn.told:
            return
        conn.told = True
        if conn.owner is None or self.relay is None:
            return  # a claim arriving later is answered with GONE (see _on_claim)
        if event is not None:
            self.relay.post(conn.owner, [wire.EVENT, conn.id, event], control=True)
        else:
            self.relay.post(conn.owner, [wire.GONE, conn.id, code], control=True)

    def _forget(self, conn: Conn) -> None:
        if self.conns.pop(conn.id, None) is not None:
            METRICS.open_connections.labels("websocket" if conn.ws else "http").dec()
        if conn.timer is not None:
            conn.timer.cancel()
        if conn.done is not None and not conn.done.done():
            conn.done.set_result(None)

    # -- relay: in -------------------------------------------------------------------------

    async def _on_item(self, kind: str, item: list[Any], sender: str = "") -> None:
        conn = self.conns.get(item[1])
        if kind == wire.CLAIM:
            self._on_claim(conn, item[1], item[2])
            return
        if kind == wire.REHOME:
            self.rehoming.on_rehome(conn, item[1], sender)
            return
        if kind == wire.RETURN:
            self.rehoming.on_return(conn, sender, item[2])
            return
        if conn is not None and sender and sender != conn.owner:
            return  # a worker that no longer owns it (re-homed away while it was cut off)
        if conn is None or conn.finished:
            return
        conn.unanswered = 0
        if kind == wire.SEND:
            await self._write(conn, item[2])
        elif kind == wire.RELEASE:
            conn.told = True
            await self._end(conn, item[2], tell_owner=False)
        elif kind == wire.END:
            # The app finished without ending the connection: what Daphne does on a crash.
            await self._end(conn, 1011, tell_owner=False)

    def _on_claim(self, conn: Conn | None, conn_id: str, owner: str) -> None:
        assert self.relay is not None
        if conn is None or conn.owner is not None or conn.finished:
            # Gone (or ended by us) before anyone claimed it: the claimer cleans up.
            self.relay.post(owner, [wire.GONE, conn_id, 1006], control=True)
            return
        conn.owner = owner
        conn.unanswered = 0
        METRICS.relay_roundtrip.observe(time.monotonic() - conn.sent_at)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._flush_held(conn)

    def _flush_held(self, conn: Conn) -> None:
        """Send the held events to the owner, in order, once it has claimed and no old owner
        still has events of this connection to return."""
        if conn.owner is None or conn.fence is not None or conn.held is None:
            return
        assert self.relay is not None
        held, conn.held = conn.held, None
        for event in held:  # bounded by pending_limit (+ what an old owner returned)
            self.relay.post(conn.owner, [wire.EVENT, conn.id, event], control=True)

    async def _write(self, conn: Conn, message: dict[str, Any]) -> None:
        kind = message["type"]
        if conn.ws:
            if kind == "websocket.accept":
                if conn.rehoming:
                    conn.rehoming = False
                    METRICS.rehome_gap.observe(time.monotonic() - conn.handover_at)
                if conn.accepted:
                    return  # a re-homed socket: the client has its accept already
                conn.accepted = True
                conn.pinned = self.settings.keeps_session(message.get("subprotocol"))
                await edge.accept(conn.send, message)
                return
            if kind == "websocket.http.response.start" and not conn.accepted:
                # The app failed before accepting (host.py): refused with its status, 500 for
                # a crash (as Daphne) or 404 for an unknown path.
                conn.finished = True
                METRICS.closes.labels(close_code_label(1011)).inc()
                await edge.deny(conn.send, message.get("status", 500))
                return
            if kind == "websocket.close":
                conn.finished = True
                code = message.get("code") or 1000
                if conn.rehoming and conn.accepted:
                    # Refused on re-home (what is HTTP 403 at a first connect): the socket is
                    # open already, so it gets a close frame, 1008 unless the app gave a code.
                    code = message.get("code") or 1008
                    message = {**message, "code": code}
                    logger.info("%s: the app refused the re-homed connection (%d)", conn.id,
                                code)
                METRICS.closes.labels(close_code_label(code)).inc()
                await edge.close(conn.send, message, accepted=conn.accepted)
                return
            if kind == "websocket.send":
                _MESSAGES_OUT.inc()
                if not edge.write_message(conn.send, message):
                    await conn.send(message)
                if edge.unsent_bytes(conn.send) > self.settings.send_buffer:
                    logger.warning("%s: client is not reading; disconnecting", conn.id)
                    METRICS.messages_dropped.labels("buffer_full").inc()
                    conn.finished = True
                    self._tell_gone(conn, 1006)
                    edge.abort(conn.send)
                return
        if kind == "http.response.start":
            conn.accepted = True
        await conn.send(message)
        if kind == "http.response.body" and not message.get("more_body", False):
            conn.finished = True
            if conn.done is not None and not conn.done.done():
                conn.done.set_result(None)

    def _on_undeliverable(self, dest: str, items: list[list[Any]]) -> None:
        for conn_id in {item[1] for item in items}:
            conn = self.conns.get(conn_id)
            if conn is not None:
                METRICS.messages_dropped.labels("channel_full").inc()
                self._spawn_end(conn, 1013, tell_owner=False)

    # -- ending connections ----------------------------------------------------------------

    def _claim_expired(self, conn: Conn) -> None:
        conn.timer = None
        if conn.finished:
            return
        if conn.owner is None and self._worker_died_at > conn.sent_at and not conn.resent:
            # A worker died since the envelope went out and may have taken it along (popped,
            # never claimed): send it once more. The first copy, if still queued, is past its
            # deadline now, so whoever takes it drops it.
            logger.info("%s: unclaimed after a worker died; connect sent again", conn.id)
            conn.resent = True
            self._spawn(self._resend(conn))
        elif conn.owner is None:
            logger.warning("%s: no worker claimed it in time", conn.id)
            METRICS.messages_dropped.labels("unclaimed").inc()
            # A re-homed socket's client reconnects (1012); a new one tries later (1013).
            self._spawn_end(conn, 1012 if conn.rehomed else 1013, tell_owner=False)
        elif conn.fence is not None:
            # The old owner never returned its events (stalled?): go on without them.
            logger.warning("%s: no RETURN from the old owner; its events are lost", conn.id)
            self.rehoming.unfence(conn)

    async def _resend(self, conn: Conn) -> None:
        assert self.relay is not None
        if conn.finished:
            return  # the client left meanwhile: no app should start for it
        deadline = self.settings.claim_timeout * (REHOME_CLAIM_FACTOR if conn.rehomed else 1)
        envelope = wire.connect_envelope(self.relay.channel, conn.id, conn.scope, deadline,
                                         rehomed=conn.rehomed)
        conn.sent_at = time.monotonic()
        conn.timer = asyncio.get_running_loop().call_later(deadline, self._claim_expired, conn)
        if not await self._enqueue(conn, envelope, "refusing"):
            conn.timer.cancel()
            await self._end(conn, 1012 if conn.rehomed else 1013, tell_owner=False)

    def _owners(self) -> set[str]:
        owners: set[str] = set()
        for c in self.conns.values():
            if not c.finished:
                owners.update(w for w in (c.owner, c.fence) if w)
        return owners

    def _owners_dead(self, dead: set[str]) -> None:
        self._worker_died_at = time.monotonic()
        for conn in list(self.conns.values()):
            if conn.finished:
                continue
            if conn.fence in dead:
                self.rehoming.unfence(conn)  # what it held died with it
            if conn.owner not in dead:
                continue
            if conn.ws and self.settings.rehome and not conn.pinned and not self.draining:
                self.rehoming.rehome(conn, "dead")
                continue
            METRICS.messages_dropped.labels("dead_owner").inc()
            conn.told = True  # nobody to tell
            self._spawn_end(conn, 1012, tell_owner=False)

    def _abandon_all(self) -> None:
        """Our heartbeat expired: the owners have dropped these connections; so do we."""
        for conn in list(self.conns.values()):
            conn.told = True
            self._spawn_end(conn, 1012, tell_owner=False)

    def _spawn_end(self, conn: Conn, code: int, *, tell_owner: bool) -> None:
        self._spawn(self._end(conn, code, tell_owner=tell_owner))

    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` in a task of its own; its failure is logged."""
        asyncio.ensure_future(coro).add_done_callback(_log_failure)

    async def _end(self, conn: Conn, code: int, *, tell_owner: bool) -> None:
        """End the client side: WebSocket close ``code``, HTTP 503 (or abort mid-response)."""
        if conn.finished:
            return
        conn.finished = True
        if tell_owner:
            self._tell_gone(conn, code)
        if conn.ws:
            METRICS.closes.labels(close_code_label(code)).inc()
            if not conn.accepted:
                # Accept first so the client sees a close code rather than a bare HTTP 403.
                conn.accepted = True
                await conn.send({"type": "websocket.accept"})
            await edge.close(conn.send, {"code": code}, accepted=True)
        elif not conn.accepted:
            conn.accepted = True
            await edge.http_error(conn.send, 503)
        else:
            edge.abort(conn.send)
        if conn.done is not None and not conn.done.done():
            conn.done.set_result(None)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("gateway could not end a connection: %r", task.exception())
