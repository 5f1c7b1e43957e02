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
from functools import partial
from typing import Any

from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.liveness import Liveness
from ..relay.relay import relay_layer
from ..relay.side import RelaySide
from . import conformance
from .acks import Acks
from .background import serve_background
from .handback import HandBack
from .owned import ABANDONED, CLOSED, HANDED, HANDING_BACK, NOT_OURS, RUNNING, OwnedConn
from .settings import WorkerSettings

logger = logging.getLogger(__name__)

#: Receives a worker keeps waiting on the work queue (one pop serves all of them).
TAKERS = 16
#: Between RELEASEs of a socket whose output Redis refused (not a tight loop when Redis
#: refuses at once: out of memory).
RELEASE_RETRY = 1.0


class Host:
    """Owns connections taken from the work queue and runs the application for each."""

    def __init__(self, application: Any, settings: WorkerSettings, layer: Any = None,
                 liveness: Liveness | None = None) -> None:
        self.application = application
        self.settings = settings
        self.conns: dict[str, OwnedConn] = {}
        self.layer = layer if layer is not None else relay_layer(settings)
        self.side = RelaySide(
            self.layer, wire.WORKER_CHANNELS, settings, on_undeliverable=self._on_undeliverable,
            peers=self._ifaces, on_dead=self._ifaces_dead, on_lost=self._abandon_all,
            liveness=liveness,
        )
        self.relay = self.side.relay  # the hot path posts straight to it
        # At most four ACK-only batches per heartbeat interval per interface (quiet sockets).
        self.acks = Acks(self.relay, settings.heartbeat_interval / 4)
        self.handback = HandBack(self.side, settings, self.acks)
        self.side.handle({wire.EVENT: self._on_event, wire.GONE: self._on_gone,
                          wire.FENCE: self.handback.on_fence})
        self._room = asyncio.Event()
        self._full_since: float | None = None  # monotonic time it last ran out of room
        self._receiving = 0  # receives waiting on the work queue (each may bring a connection)
        self._taking: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        channel = await self.side.start()
        METRICS.owned_connections_limit.set(s.concurrency)  # the autoscaler's denominator
        self._taking = self.side.tasks.spawn(self._take_loop(), f"take {wire.CONNECT_QUEUE}")
        if s.channels:
            self.side.tasks.spawn(serve_background(self.application, s.channels),
                                  "background channels")
        logger.info("worker %s taking connections (concurrency %d)", channel, s.concurrency)

    def full_for(self) -> float:
        """Seconds it has taken no connection for want of room (owning ``concurrency``); 0
        while it has room. Its heartbeat reports it (interfaces refuse when all are full)."""
        since = self._full_since
        return 0.0 if since is None else time.monotonic() - since

    async def ready(self) -> tuple[bool, str]:
        """Readiness: not draining, its own inbox answers (RelaySide.ready)."""
        METRICS.worker_heartbeat_age.set(min(self.side.liveness.age, 1e6))
        return self.side.ready()

    async def drain(self, timeout: float) -> tuple[int, int]:
        """Stop taking connections, hand owned sockets back, let HTTP finish, stop.

        Sockets are re-homed (``CHANNELS_FLEET_REHOME``, default) in batches of
        ``rehome_batch`` with ``rehome_pause`` between them, or closed with 1012.
        Returns (sockets handed back, app instances cancelled at the deadline).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.side.draining = True
        METRICS.drain_started()
        # 0. Take no more connections (background channels keep going until the end).
        if self._taking is not None:
            self._taking.cancel()
            await asyncio.gather(self._taking, return_exceptions=True)
        # 1. Hand every WebSocket back: re-homed on another worker, or closed with 1012.
        sockets = [c for c in self.conns.values() if c.ws and c.state is RUNNING and not c.gone]
        released = len(sockets)
        if self.settings.rehome:
            # Sessions that cannot move (GraphQL over WebSocket): the client reconnects.
            for conn in [c for c in sockets if self.settings.keeps_session(c.subprotocol)]:
                self._release(conn, 1012)
            sockets = [c for c in sockets if c.state is RUNNING]
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
        await self.side.flushed(max(0.1, deadline - loop.time()))
        await self.stop()
        return released, cancelled

    async def stop(self) -> None:
        self.acks.stop()
        await self.side.tasks.cancel()
        tasks = [c.task for c in self.conns.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.side.stop()

    # -- taking connections ----------------------------------------------------------------

    async def _take_loop(self) -> None:
        """``TAKERS`` receives wait on the work queue at once: in a reconnect storm one pop
        takes that many envelopes, where one receive at a time paid a Redis round trip for
        each (envelopes waited up to the claim timeout in the queue). They never hold more
        than the room left: owned connections plus waiting receives stay <= concurrency."""
        await asyncio.gather(*(self._take() for _ in range(TAKERS)))

    async def _take(self) -> None:
        while not self.side.draining:
            while len(self.conns) + self._receiving >= self.settings.concurrency:
                self._room.clear()
                await self._room.wait()
            self._receiving += 1
            try:
                envelope = await self.layer.receive(wire.CONNECT_QUEUE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("receive on %s failed: %r; retrying", wire.CONNECT_QUEUE, exc)
                await asyncio.sleep(0.5)
                continue
            finally:
                self._receiving -= 1
            now = time.time()
            try:
                wire.parse_envelope(envelope)
            except wire.WireError as exc:
                logger.warning("ignored a malformed message on %s: %s", wire.CONNECT_QUEUE, exc)
                continue
            if envelope.get("deadline", now) < now:
                # The interface has already answered 1013/503 for it.
                METRICS.messages_dropped.labels("expired").inc()
                continue
            METRICS.queue_wait.observe(max(0.0, now - envelope.get("sent_at", now)))
            self._open(envelope)

    def _open(self, envelope: dict[str, Any]) -> None:
        scope = wire.scope_from_wire(envelope)
        iface = envelope["iface"]
        scope["fleet"] = {"interface": iface, "rehomed": envelope.get("rehomed", 0),
                          "worker": self.side.channel}  # who serves it (status pages)
        ws = scope["type"] == "websocket"
        conn = OwnedConn(envelope["conn"], iface, ws, self.settings.inbound_limit)
        self.conns[conn.id] = conn
        METRICS.owned(len(self.conns))
        if len(self.conns) >= self.settings.concurrency and self._full_since is None:
            self._full_since = time.monotonic()
        self.relay.post(iface, [wire.CLAIM, conn.id, self.side.channel], control=True)
        if ws:
            conn.queue.put_nowait({"type": "websocket.connect"})
        acks = self.acks if ws and envelope.get("ack") else None
        conn.task = asyncio.create_task(self._run(conn, scope, acks), name=f"conn {conn.id}")

    async def _run(self, conn: OwnedConn, scope: dict[str, Any], acks: Acks | None) -> None:
        async def send(message: dict[str, Any]) -> None:
            try:
                self._app_send(conn, message)
            except conformance.INVALID as exc:
                self._refuse(conn, scope, exc)
                raise

        async def receive() -> dict[str, Any]:
            # Asking again = every event taken so far has been handled (Channels dispatches
            # one at a time): the point where a hand-back loses nothing, and an ACK's count.
            if acks is not None and conn.handled != conn.taken:
                conn.handled = conn.taken
                acks.mark(conn)
            if conn.idle is not None and conn.queue.empty():
                conn.idle.set()
            conn.waiting = True
            try:
                event = await conn.queue.get()
            finally:
                conn.waiting = False
            if acks is not None and event["type"] == "websocket.receive":
                conn.taken += 1
                acks.mark(conn)
            return event

        try:
            await self.application(scope, receive, send)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            if not conformance.caused_by(exc, conn.refused):  # else logged and answered already
                self._failed(conn, scope, exc)
        finally:
            if conn.reaper is not None:
                conn.reaper.cancel()
            if conn.state not in NOT_OURS:
                self.relay.post(conn.iface, [wire.END, conn.id, None], control=True)
            self.conns.pop(conn.id, None)
            METRICS.owned(len(self.conns))
            if len(self.conns) < self.settings.concurrency:
                self._full_since = None
            self._room.set()

    def _failed(self, conn: OwnedConn, scope: dict[str, Any], exc: Exception) -> None:
        """The app raised: answer the client as Daphne would, in one log line."""
        status = 500
        if conformance.unrouted(exc):
            # Channels' URLRouter refusing an unknown path: a client error, one line.
            status = 404
            logger.warning("no route for %s %s on %s", scope["type"], scope.get("path"), conn.id)
        else:
            logger.error("application failed on %s %s: %r", conn.id, scope.get("path"), exc,
                         exc_info=exc)
        self._answer_failure(conn, status)

    def _refuse(self, conn: OwnedConn, scope: dict[str, Any], exc: Exception) -> None:
        """The app sent what Daphne would refuse: its ``send()`` raises ``exc``, nothing of it
        is relayed, the client gets 500 / 1011 (no detail), the app its disconnect, and one
        line names the consumer and the problem."""
        if conn.state is not RUNNING and conn.state is not HANDING_BACK:
            return  # ended already: dropped, as everything after the end
        conn.refused = exc
        answer = ("1011" if conn.ws and conn.accepted
                  else "a cut response" if conn.accepted else "500")
        logger.error("%s sent an invalid message on %s %s: %s: %s (the client gets %s)",
                     conformance.sender(conn.task, self.application), conn.id,
                     scope.get("path"), type(exc).__name__, exc, answer)
        if not conn.ws and conn.accepted:
            self._release(conn, 1011, always=True)  # the status is out: the response is cut
            return
        self._answer_failure(conn, 500)
        self._close(conn)
        conn.hand_disconnect(conn.disconnect_event(1011), self.settings.app_close_timeout)

    def _answer_failure(self, conn: OwnedConn, status: int) -> None:
        """Answer the client of a failed app as Daphne does: refuse the handshake with
        ``status``, close with 1011, or answer ``status``."""
        if conn.ws and not conn.accepted:
            # Refused with an HTTP status (Daphne answers any crash before accept with 500;
            # an unknown path is 404 here). An interface that predates this ignores the
            # message and closes with 1011 on END.
            self._send(conn, {"type": "websocket.http.response.start", "status": status,
                              "headers": []})
        elif conn.ws and conn.state is not CLOSED:
            self._send(conn, {"type": "websocket.close", "code": 1011})
        elif not conn.ws and not conn.accepted:
            body = b"Not Found\n" if status == 404 else b"Server Error\n"
            self._send(conn, {"type": "http.response.start", "status": status,
                              "headers": [(b"content-type", b"text/plain")]})
            self._send(conn, {"type": "http.response.body", "body": body})

    def _app_send(self, conn: OwnedConn, message: dict[str, Any]) -> None:
        """The app's ``send()``: check the message for the connection's phase, then relay it.

        Raises what Daphne's would for an invalid message (:mod:`.conformance`). After the
        end (response complete, socket closed, handed back) messages are dropped, as Daphne
        drops them.
        """
        state = conn.state
        if state is not RUNNING and state is not HANDING_BACK:
            if state is HANDED and message.get("type") == "websocket.send":
                # The old consumer of a re-homed socket (e.g. a group message in the gap).
                METRICS.messages_dropped.labels("rehome_gap").inc()
            return
        if conn.ws and conn.accepted and message.__class__ is dict and (
                message.get("type") == "websocket.send"):
            # The per-frame path, checked here (no call): text a str or bytes bytes, not both.
            text, data = message.get("text"), message.get("bytes")
            if ((text is None or text.__class__ is str)
                    and (data is None or data.__class__ is bytes) and not (text and data)):
                self._post(conn, message)
                return
        conformance.check(message, ws=conn.ws, accepted=conn.accepted)  # raises what is wrong
        self._send(conn, message)

    def _send(self, conn: OwnedConn, message: dict[str, Any]) -> None:
        """Relay one message (of the app, checked, or the host's own) to the interface."""
        state = conn.state  # identity tests: an enum's hash is a Python call, this is per frame
        if state is HANDED or state is ABANDONED:
            if state is HANDED and message.get("type") == "websocket.send":
                # The old consumer of a re-homed socket (e.g. a group message in the gap).
                METRICS.messages_dropped.labels("rehome_gap").inc()
            return
        kind = message.get("type")
        if kind == "websocket.accept":
            conn.accepted = True
            conn.subprotocol = message.get("subprotocol")
        elif kind == "websocket.close":
            self._close(conn)
            # The app sees its disconnect now rather than after the client's close frame.
            conn.hand_disconnect(conn.disconnect_event(message.get("code") or 1000),
                                 self.settings.app_close_timeout)
        elif kind == "http.response.start":
            conn.accepted = True
        elif kind == "http.response.body":
            done = not message.get("more_body", False)
            if done:
                self._close(conn)
            for part in wire.split_body(message, self.settings.chunk_size):
                self._post(conn, part)
            if done:
                conn.hand_disconnect(conn.disconnect_event(1000), self.settings.app_close_timeout)
            return
        self._post(conn, message)

    def _post(self, conn: OwnedConn, message: dict[str, Any]) -> None:
        if not self.relay.post(conn.iface, [wire.SEND, conn.id, message]):
            # Redis is slower than what the apps send: end this connection, buffer nothing.
            logger.warning("%s: relay backlog full; closing", conn.id)
            METRICS.messages_dropped.labels("buffer_full").inc()
            self._release(conn, 1013, always=True)

    @staticmethod
    def _close(conn: OwnedConn) -> None:
        if conn.state is RUNNING or conn.state is HANDING_BACK:
            conn.move(CLOSED)

    # -- relay: in -------------------------------------------------------------------------

    async def _on_event(self, conn_id: str, event: dict[str, Any], sender: str) -> None:
        handed = self.handback.handed.get(conn_id)
        if handed is not None:
            if event["type"] != "websocket.disconnect":
                self.handback.stash(handed, event)
            return
        conn = self.conns.get(conn_id)
        if conn is None or conn.state is HANDED or conn.state is ABANDONED:
            return  # finished here already; the interface learns from END
        if event["type"] in ("websocket.disconnect", "http.disconnect"):
            conn.hand_disconnect(event, self.settings.app_close_timeout)
            return
        if conn.gone:
            return
        if conn.state is HANDING_BACK:
            self.handback.stash(conn, event)
            return
        try:
            conn.queue.put_nowait(event)
        except asyncio.QueueFull:
            logger.warning("%s: app is %d events behind; closing", conn.id, conn.queue.qsize())
            METRICS.messages_dropped.labels("buffer_full").inc()
            self._release(conn, 1013)

    async def _on_gone(self, conn_id: str, code: int, sender: str) -> None:
        conn = self.conns.get(conn_id)
        if conn is not None and conn.state not in NOT_OURS:
            conn.hand_disconnect(conn.disconnect_event(code), self.settings.app_close_timeout)

    def _release(self, conn: OwnedConn, code: int, *, always: bool = False) -> None:
        """Give the connection up: the interface closes the socket with ``code``.

        ``always``: tell the interface even if the app had closed it (its close may be what
        could not be relayed).
        """
        if conn.state is not CLOSED or always:
            self._close(conn)
            self.relay.post(conn.iface, [wire.RELEASE, conn.id, code], control=True)
        conn.hand_disconnect(conn.disconnect_event(code), self.settings.app_close_timeout)

    # -- liveness --------------------------------------------------------------------------

    def _ifaces(self) -> set[str]:
        ifaces = {c.iface for c in self.conns.values() if c.state not in NOT_OURS}
        return ifaces | {c.iface for c in self.handback.handed.values()}

    def _ifaces_dead(self, dead: set[str]) -> None:
        for conn in list(self.conns.values()):
            if conn.iface in dead and conn.state not in NOT_OURS:
                self._abandon(conn)
        self.handback.forget(dead)

    def _abandon_all(self) -> None:
        for conn in list(self.conns.values()):
            self._abandon(conn)

    def _abandon(self, conn: OwnedConn) -> None:
        """The connection is gone or no longer ours: run its disconnect, relay nothing more."""
        if conn.state is ABANDONED:
            return
        conn.move(ABANDONED)
        METRICS.messages_dropped.labels("dead_owner").inc()
        conn.hand_disconnect(conn.disconnect_event(1006), self.settings.app_close_timeout)

    def _on_undeliverable(self, dest: str, items: list[list[Any]]) -> None:
        """Redis took nothing for interface ``dest`` within the layer's retry_timeout (the
        shard of its inbox down that long, or refusing writes): the app's output in ``items``
        is gone. The socket must not stay open as if still served: it is released (1013, try
        again). A RELEASE dropped in turn (or the app's own close, or its END) is posted again
        RELEASE_RETRY later, until Redis takes it. Not for a socket given up already
        (re-homed away, or its interface dead)."""
        for conn_id in {item[1] for item in items if item[1]}:  # an ACK item names none
            conn = self.conns.get(conn_id)  # None: its app finished
            if conn is not None and conn.state in NOT_OURS:
                continue
            if conn is not None and conn.state is not CLOSED:
                METRICS.messages_dropped.labels("undeliverable").inc()
                self._release(conn, 1013)
            else:
                release = [wire.RELEASE, conn_id, 1013]
                asyncio.get_running_loop().call_later(
                    RELEASE_RETRY, partial(self.relay.post, dest, release, control=True))
