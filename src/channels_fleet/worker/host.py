"""The worker side of the relay: runs the project's ASGI application for relayed connections.

The host takes connect envelopes from the shared work queue ``fleet.connect`` while it owns
fewer than ``concurrency`` connections, claims each one, and runs
``application(scope, receive, send)`` for it as a task: ``receive`` reads the connection's
bounded inbound queue (events relayed from the interface) and ``send`` relays the app's
messages back. The application is the project's ordinary one (``ProtocolTypeRouter``,
``AuthMiddlewareStack``, ``URLRouter`` ...), so consumers run unchanged.

    host = Host(application, WorkerSettings.from_env(app="chat_project.asgi:application"))
    await host.start()
    ...
    await host.drain(timeout=25)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.relay import Relay, RelayEndpoint, relay_layer
from .handback import HandBack
from .settings import WorkerSettings

logger = logging.getLogger(__name__)


class WConn:
    """One connection owned by this worker."""

    __slots__ = (
        "id", "iface", "ws", "queue", "task", "accepted", "closed", "gone", "abandoned",
        "handing", "stash", "waiting", "idle", "reaper", "pinned",
    )

    def __init__(self, conn_id: str, iface: str, ws: bool, limit: int) -> None:
        self.id = conn_id
        self.iface = iface
        self.ws = ws
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=limit)
        self.task: asyncio.Task[None] | None = None
        self.accepted = False  # ws accepted / http response started
        self.closed = False  # ws closed by the app / http response complete
        self.gone = False  # the app has been handed its disconnect event
        self.abandoned = False  # the connection is no longer ours: drop what the app sends
        self.handing = False  # being handed back (re-homed): events go to ``stash``, not the app
        self.stash: list[dict[str, Any]] = []
        self.waiting = False  # the app is blocked in receive()
        self.idle: asyncio.Event | None = None  # set when the app waits on an empty queue
        self.reaper: asyncio.TimerHandle | None = None  # cancels an app that outlives its end
        self.pinned = False  # its subprotocol keeps session state in the app: never handed back


class Host:
    """Owns connections taken from the work queue and runs the application for each."""

    def __init__(self, application: Any, settings: WorkerSettings, layer: Any = None) -> None:
        self.application = application
        self.settings = settings
        self.layer = layer
        self.conns: dict[str, WConn] = {}
        self.handback = HandBack(self)
        self.endpoint: RelayEndpoint | None = None
        self.relay: Relay | None = None
        self.draining = False
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        if self.layer is None:
            self.layer = relay_layer(s)
        self.endpoint = RelayEndpoint(
            self.layer, "fleet.worker", self._on_item, self._on_undeliverable, settings=s,
            peers=self._ifaces, on_dead=self._ifaces_dead, on_lost=self._abandon_all,
        )
        self.relay = self.endpoint.relay
        channel = await self.endpoint.start()
        self._tasks.append(asyncio.create_task(self._take_loop(), name="take fleet.connect"))
        if s.channels:
            self._tasks.append(asyncio.create_task(self._background(), name="background"))
        logger.info("worker %s taking connections (concurrency %d)", channel, s.concurrency)

    async def ready(self) -> tuple[bool, str]:
        """Readiness: not draining and heartbeat fresh (the relay's Redis answers)."""
        heartbeat = self.endpoint.heartbeat if self.endpoint is not None else None
        if heartbeat is not None:
            METRICS.worker_heartbeat_age.set(min(heartbeat.age, 1e6))
        if self.draining:
            return False, "draining"
        if heartbeat is None or not heartbeat.fresh:
            return False, "heartbeat stale (Redis unreachable?)"
        return True, "ok"

    async def drain(self, timeout: float) -> tuple[int, int]:
        """Stop taking connections, hand owned sockets back, let HTTP finish, stop.

        Sockets are re-homed (``CHANNELS_FLEET_REHOME``, default) in batches of
        ``rehome_batch`` with ``rehome_pause`` between them, or closed with 1012.
        Returns (sockets handed back, app instances cancelled at the deadline).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.draining = True
        METRICS.draining.set(1)
        # 0. Take no more connections (background channels keep going until the end).
        take = self._tasks[0]
        take.cancel()
        await asyncio.gather(take, return_exceptions=True)
        # 1. Hand every WebSocket back: re-homed on another worker, or closed with 1012.
        sockets = [c for c in self.conns.values() if c.ws and not c.closed and not c.gone]
        released = len(sockets)
        if self.settings.rehome:
            # Sessions that cannot move (GraphQL over WebSocket): the client reconnects.
            for conn in [c for c in sockets if c.pinned]:
                self._release(conn, 1012)
            sockets = [c for c in sockets if not c.pinned]
            size, pause = self.settings.rehome_batch, self.settings.rehome_pause
            for start in range(0, len(sockets), size):
                if start:
                    await asyncio.sleep(pause)
                await asyncio.gather(*(self.handback.give(c) for c in sockets[start:start + size]))
            # The interfaces answer each REHOME with a FENCE; return what arrived meanwhile.
            while self.handback.handed and loop.time() < deadline - 2:
                await asyncio.sleep(0.05)
        else:
            for conn in sockets:
                self._release(conn, 1012)
        # 2. Let the apps run their disconnect handlers and HTTP responses finish.
        running = [c.task for c in self.conns.values() if c.task is not None]
        if running:
            await asyncio.wait(running, timeout=max(0.1, deadline - loop.time() - 1))
        cancelled = 0
        for conn in list(self.conns.values()):
            if conn.task is not None and not conn.task.done():
                conn.task.cancel()
                cancelled += 1
        assert self.relay is not None
        await self.relay.flushed(max(0.1, deadline - loop.time()))
        await self.stop()
        return released, cancelled

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        tasks = [c.task for c in self.conns.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.endpoint is not None:
            await self.endpoint.stop()

    # -- taking connections ----------------------------------------------------------------

    async def _take_loop(self) -> None:
        assert self.relay is not None
        while not self.draining:
            while len(self.conns) >= self.settings.concurrency:
                self._room.clear()
                await self._room.wait()
            try:
                envelope = await self.layer.receive(wire.CONNECT_CHANNEL)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("receive on %s failed: %r; retrying", wire.CONNECT_CHANNEL, exc)
                await asyncio.sleep(0.5)
                continue
            now = time.time()
            try:
                wire.parse_envelope(envelope)
            except wire.WireError as exc:
                logger.warning("ignored a malformed message on %s: %s", wire.CONNECT_CHANNEL, exc)
                continue
            if envelope.get("deadline", now) < now:
                # The interface has already answered 1013/503 for it.
                METRICS.messages_dropped.labels("expired").inc()
                continue
            METRICS.queue_wait.observe(max(0.0, now - envelope.get("sent_at", now)))
            self._open(envelope)

    def _open(self, envelope: dict[str, Any]) -> None:
        assert self.relay is not None
        scope = wire.scope_from_wire(envelope)
        iface = envelope["iface"]
        scope["fleet"] = {"interface": iface, "rehomed": envelope.get("rehomed", 0),
                          "worker": self.relay.channel}  # who serves it (status pages)
        ws = scope["type"] == "websocket"
        conn = WConn(envelope["conn"], iface, ws, self.settings.inbound_limit)
        self.conns[conn.id] = conn
        METRICS.owned_connections.set(len(self.conns))
        self.relay.post(iface, [wire.CLAIM, conn.id, self.relay.channel], control=True)
        if ws:
            conn.queue.put_nowait({"type": "websocket.connect"})
        conn.task = asyncio.create_task(self._run(conn, scope), name=f"conn {conn.id}")

    async def _run(self, conn: WConn, scope: dict[str, Any]) -> None:
        async def send(message: dict[str, Any]) -> None:
            self._send(conn, message)

        async def receive() -> dict[str, Any]:
            # Waiting on an empty queue = every event taken so far has been handled (Channels
            # dispatches one at a time): the point where a hand-back loses nothing.
            if conn.idle is not None and conn.queue.empty():
                conn.idle.set()
            conn.waiting = True
            try:
                return await conn.queue.get()
            finally:
                conn.waiting = False

        try:
            await self.application(scope, receive, send)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            status = 500
            if isinstance(exc, ValueError) and str(exc).startswith("No route found"):
                # Channels' URLRouter refusing an unknown path: a client error, one line.
                status = 404
                logger.warning("no route for %s %s on %s", scope["type"], scope.get("path"),
                               conn.id)
            else:
                logger.error("application failed on %s %s: %r", conn.id, scope.get("path"),
                             exc, exc_info=exc)
            if conn.ws and not conn.accepted:
                # Refused with an HTTP status (Daphne answers any crash before accept with
                # 500; an unknown path is 404 here). An interface that predates this ignores
                # the message and closes with 1011 on END.
                self._send(conn, {"type": "websocket.http.response.start", "status": status,
                                  "headers": []})
            elif conn.ws and not conn.closed:
                self._send(conn, {"type": "websocket.close", "code": 1011})
            elif not conn.ws and not conn.accepted:
                body = b"Not Found\n" if status == 404 else b"Server Error\n"
                self._send(conn, {"type": "http.response.start", "status": status,
                                  "headers": [(b"content-type", b"text/plain")]})
                self._send(conn, {"type": "http.response.body", "body": body})
        finally:
            if conn.reaper is not None:
                conn.reaper.cancel()
            if not conn.abandoned and self.relay is not None:
                self.relay.post(conn.iface, [wire.END, conn.id, None], control=True)
            self.conns.pop(conn.id, None)
            METRICS.owned_connections.set(len(self.conns))
            self._room.set()

    def _send(self, conn: WConn, message: dict[str, Any]) -> None:
        """Relay one message of the app to the interface, in order."""
        if conn.abandoned:
            if conn.handing and message.get("type") == "websocket.send":
                # The old consumer of a re-homed socket (e.g. a group message in the gap).
                METRICS.messages_dropped.labels("rehome_gap").inc()
            return
        assert self.relay is not None
        kind = message.get("type")
        if kind == "websocket.accept":
            conn.accepted = True
            conn.pinned = self.settings.keeps_session(message.get("subprotocol"))
        elif kind == "websocket.close":
            conn.closed = True
            # The app sees its disconnect now rather than after the client's close frame.
            self._deliver_gone(conn, {"type": "websocket.disconnect",
                                      "code": message.get("code") or 1000})
        elif kind == "http.response.start":
            conn.accepted = True
        elif kind == "http.response.body":
            if not message.get("more_body", False):
                conn.closed = True
            for part in wire.split_body(message, self.settings.chunk_size):
                self._post(conn, part)
            if conn.closed:
                self._deliver_gone(conn, {"type": "http.disconnect"})
            return
        self._post(conn, message)

    def _post(self, conn: WConn, message: dict[str, Any]) -> None:
        assert self.relay is not None
        if not self.relay.post(conn.iface, [wire.SEND, conn.id, message]):
            # Redis is slower than what the apps send: end this connection, buffer nothing.
            logger.warning("%s: relay backlog full; closing", conn.id)
            METRICS.messages_dropped.labels("buffer_full").inc()
            conn.closed = False
            self._release(conn, 1013)

    # -- relay: in -------------------------------------------------------------------------

    async def _on_item(self, kind: str, item: list[Any], sender: str = "") -> None:
        handed = self.handback.handed.get(item[1])
        if handed is not None:
            self.handback.on_item(handed, kind, item)
            return
        conn = self.conns.get(item[1])
        if conn is None or conn.abandoned:
            return  # finished here already; the interface learns from END
        if kind == wire.EVENT:
            event = item[2]
            if event["type"] in ("websocket.disconnect", "http.disconnect"):
                self._deliver_gone(conn, event)
                return
            if conn.gone:
                return
            if conn.handing:
                self.handback.stash(conn, event)
                return
            try:
                conn.queue.put_nowait(event)
            except asyncio.QueueFull:
                logger.warning("%s: app is %d events behind; closing", conn.id,
                               conn.queue.qsize())
                METRICS.messages_dropped.labels("buffer_full").inc()
                self._release(conn, 1013)
        elif kind == wire.GONE:
            self._deliver_gone(conn, self._disconnect(conn, item[2]))

    @staticmethod
    def _disconnect(conn: WConn, code: int) -> dict[str, Any]:
        if conn.ws:
            return {"type": "websocket.disconnect", "code": code}
        return {"type": "http.disconnect"}

    def _deliver_gone(self, conn: WConn, event: dict[str, Any]) -> None:
        """Hand the app its (single) disconnect event, even past a full inbound queue."""
        if conn.gone:
            return
        conn.gone = True
        while conn.queue.full():
            conn.queue.get_nowait()
        conn.queue.put_nowait(event)
        # An app that never reads it (an AsyncHttpConsumer streaming from handle(), a
        # subscription waiting on the layer) would run, and hold its groups, for ever: Daphne
        # cancels it application_close_timeout after the disconnect; so do we.
        conn.reaper = asyncio.get_running_loop().call_later(
            self.settings.app_close_timeout, self._reap, conn)

    def _reap(self, conn: WConn) -> None:
        if conn.task is not None and not conn.task.done():
            logger.warning("%s: app still running %.3g s after its disconnect; cancelled",
                           conn.id, self.settings.app_close_timeout)
            conn.task.cancel()

    def _release(self, conn: WConn, code: int) -> None:
        """Give the connection up: the interface closes the socket with ``code``."""
        assert self.relay is not None
        if not conn.closed:
            conn.closed = True
            self.relay.post(conn.iface, [wire.RELEASE, conn.id, code], control=True)
        self._deliver_gone(conn, self._disconnect(conn, code))

    # -- liveness --------------------------------------------------------------------------

    def _ifaces(self) -> set[str]:
        ifaces = {c.iface for c in self.conns.values() if not c.abandoned}
        return ifaces | {c.iface for c in self.handback.handed.values()}

    def _ifaces_dead(self, dead: set[str]) -> None:
        for conn in list(self.conns.values()):
            if conn.iface in dead and not conn.abandoned:
                self._abandon(conn)
        self.handback.forget(dead)

    def _abandon_all(self) -> None:
        for conn in list(self.conns.values()):
            self._abandon(conn)

    def _abandon(self, conn: WConn) -> None:
        """The connection is gone or no longer ours: run its disconnect, relay nothing more."""
        conn.abandoned = True
        METRICS.messages_dropped.labels("dead_owner").inc()
        self._deliver_gone(conn, self._disconnect(conn, 1006))

    def _on_undeliverable(self, dest: str, items: list[list[Any]]) -> None:
        for conn_id in {item[1] for item in items}:
            conn = self.conns.get(conn_id)
            if conn is not None:
                self._abandon(conn)

    # -- background channels (what runworker did) ------------------------------------------

    async def _background(self) -> None:
        from channels.layers import get_channel_layer
        from channels.worker import Worker

        names = ", ".join(self.settings.channels)
        worker = Worker(self.application, list(self.settings.channels), get_channel_layer())
        logger.info("serving background channels %s", names)
        try:
            await worker.arun()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # E.g. no "channel" entry in the ProtocolTypeRouter: say so, keep serving sockets.
            logger.error("background channels %s stopped: %r", names, exc)
