"""The interface side of the relay: an ASGI app (served by Daphne) that owns no project code.

For each WebSocket connection or HTTP request the gateway sends a connect envelope to the shared
work queue ``fleet.connect``; the worker that takes it claims the connection, and from then on
client events go to that worker's channel and the app's messages come back on this process's
channel, in order, through :class:`channels_fleet.relay.Relay`.

    gateway = Gateway(InterfaceSettings.from_env())
    await gateway.start()                # before serving (Daphne has no lifespan)
    server = daphne.server.Server(gateway, ...)

Edge failures never reach the client as a traceback: no worker in time or a full work queue
closes a WebSocket with 1013 (HTTP 503), a dead worker with 1012 (HTTP 503), a drain with 1001.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from channels.exceptions import ChannelFull

from . import edge, wire
from .limits import ClientLimit, client_key, refuse
from .liveness import Heartbeat, PeerWatch, redis_client
from .metrics import METRICS, close_code_label
from .relay import Relay, relay_layer
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
        "sent_at", "timer",
    )

    def __init__(self, conn_id: str, ws: bool, send: Send) -> None:
        self.id = conn_id
        self.ws = ws
        self.send = send
        self.owner: str | None = None
        self.held: list[dict[str, Any]] | None = []  # events before the claim; None after it
        self.accepted = False  # ws: accepted; http: response started
        self.finished = False  # the interface has ended the client side (close / 503 / done)
        self.told = False  # the owner has been told the client is gone
        self.done: asyncio.Future[None] | None = None  # http: response complete
        self.sent_at = 0.0
        self.timer: asyncio.TimerHandle | None = None


class Gateway:
    """The interface's ASGI application. One instance per process."""

    def __init__(self, settings: InterfaceSettings, layer: Any = None) -> None:
        self.settings = settings
        self.layer = layer
        self.conns: dict[str, Conn] = {}
        self.relay: Relay | None = None
        self.heartbeat: Heartbeat | None = None
        self.watch: PeerWatch | None = None
        self.draining = False
        self.limits = ClientLimit(settings.max_connections_per_client)
        self._ids = itertools.count(1)
        self._id_prefix = ""
        self._redis: Any = None
        self._started = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        if self.layer is None:
            self.layer = relay_layer(s, connect_capacity=s.connect_capacity)
        self.relay = Relay(self.layer, "fleet.iface", self._on_item, self._on_undeliverable)
        channel = await self.relay.start()
        self._id_prefix = channel.rsplit("!", 1)[-1][:12]
        self._redis = await redis_client(s.redis_url)
        self.heartbeat = Heartbeat(
            s.redis_url, channel, interval=s.heartbeat_interval, ttl=s.heartbeat_ttl,
            on_lost=self._abandon_all,
        )
        await self.heartbeat.start()
        self.watch = PeerWatch(self._redis, self._owners, self._owners_dead,
                               interval=s.heartbeat_interval)
        self.watch.start()
        self._started.set()
        logger.info("gateway relaying on %s", channel)

    async def stop(self) -> None:
        if self.watch is not None:
            await self.watch.stop()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self._redis is not None:
            await self._redis.aclose()

    async def ready(self) -> tuple[bool, str]:
        """Readiness: not draining, heartbeat fresh (so the layer's Redis answers)."""
        if self.draining:
            return False, "draining"
        if self.heartbeat is None or not self.heartbeat.fresh:
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
        client = client_key(scope)
        if not self.limits.acquire(client, scope):
            await refuse(scope, receive, send)
            return
        conn = Conn(f"{self._id_prefix}.{next(self._ids):x}", kind == "websocket", send)
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
        try:
            await self.relay.send_now(wire.CONNECT_CHANNEL, envelope)
        except ChannelFull:
            logger.warning("work queue %s full: refusing %s", wire.CONNECT_CHANNEL, conn.id)
            METRICS.channel_full.labels("send").inc()
            METRICS.messages_dropped.labels("channel_full").inc()
            self.conns.pop(conn.id, None)
            await self._end(conn, 1013, tell_owner=False)
            return False
        METRICS.open_connections.labels("websocket" if conn.ws else "http").inc()
        conn.timer = asyncio.get_running_loop().call_later(
            self.settings.claim_timeout, self._claim_expired, conn
        )
        return True

    def _to_owner(self, conn: Conn, event: dict[str, Any]) -> None:
        if conn.owner is not None:
            assert self.relay is not None
            if not self.relay.post(conn.owner, [wire.EVENT, conn.id, event]):
                logger.warning("%s: relay backlog full; closing", conn.id)
                METRICS.messages_dropped.labels("buffer_full").inc()
                self._spawn_end(conn, 1013, tell_owner=True)
            return
        assert conn.held is not None
        conn.held.append(event)
        if len(conn.held) > self.settings.pending_limit:
            logger.warning("%s: %d events before any claim; closing", conn.id, len(conn.held))
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

    async def _on_item(self, kind: str, item: list[Any]) -> None:
        conn = self.conns.get(item[1])
        if kind == wire.SEND:
            if conn is not None and not conn.finished:
                await self._write(conn, item[2])
        elif kind == wire.CLAIM:
            self._on_claim(conn, item[1], item[2])
        elif kind == wire.RELEASE:
            if conn is not None and conn.owner is not None and not conn.finished:
                # Issue 9's re-homing hooks in here; for now the client reconnects (1012).
                conn.told = True
                await self._end(conn, item[2], tell_owner=False)
        elif kind == wire.END:
            if conn is not None and not conn.finished:
                # The app finished without ending the connection: what Daphne does on a crash.
                await self._end(conn, 1011, tell_owner=False)

    def _on_claim(self, conn: Conn | None, conn_id: str, owner: str) -> None:
        assert self.relay is not None
        if conn is None or conn.owner is not None or conn.finished:
            # Gone (or ended by us) before anyone claimed it: the claimer cleans up.
            self.relay.post(owner, [wire.GONE, conn_id, 1006], control=True)
            return
        conn.owner = owner
        METRICS.relay_roundtrip.observe(time.monotonic() - conn.sent_at)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        held, conn.held = conn.held or [], None
        for event in held:  # bounded by pending_limit
            self.relay.post(owner, [wire.EVENT, conn.id, event], control=True)

    async def _write(self, conn: Conn, message: dict[str, Any]) -> None:
        kind = message["type"]
        if conn.ws:
            if kind == "websocket.accept":
                conn.accepted = True
                await edge.accept(conn.send, message)
                return
            if kind == "websocket.close":
                conn.finished = True
                code = message.get("code") or 1000
                METRICS.closes.labels(close_code_label(code)).inc()
                await edge.close(conn.send, message, accepted=conn.accepted)
                return
            if kind == "websocket.send":
                _MESSAGES_OUT.inc()
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
        if conn.owner is None and not conn.finished:
            logger.warning("%s: no worker claimed it within %.1fs", conn.id,
                           self.settings.claim_timeout)
            METRICS.messages_dropped.labels("unclaimed").inc()
            self._spawn_end(conn, 1013, tell_owner=False)

    def _owners(self) -> set[str]:
        return {c.owner for c in self.conns.values() if c.owner and not c.finished}

    def _owners_dead(self, dead: set[str]) -> None:
        for conn in list(self.conns.values()):
            if conn.owner in dead and not conn.finished:
                METRICS.messages_dropped.labels("dead_owner").inc()
                conn.told = True  # nobody to tell
                self._spawn_end(conn, 1012, tell_owner=False)

    def _abandon_all(self) -> None:
        """Our heartbeat expired: the owners have dropped these connections; so do we."""
        for conn in list(self.conns.values()):
            conn.told = True
            self._spawn_end(conn, 1012, tell_owner=False)

    def _spawn_end(self, conn: Conn, code: int, *, tell_owner: bool) -> None:
        task = asyncio.ensure_future(self._end(conn, code, tell_owner=tell_owner))
        task.add_done_callback(_log_failure)

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
