"""The worker side of the relay: runs the project's ASGI application for relayed connections.

The host takes connect envelopes from the shared work queue ``fleet.connect`` while it owns
fewer than ``concurrency`` connections, claims each one, and runs
``application(scope, receive, send)`` for it as a task: an :class:`~.instance.AppInstance`,
whose ``receive`` reads the connection's bounded inbound queue (events relayed from the
interface) and whose ``send`` relays the app's messages back. The application is the
project's ordinary one (``ProtocolTypeRouter``, ``AuthMiddlewareStack``, ``URLRouter`` ...), so
consumers run unchanged.

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

from ..layers.homing import HomedChannel
from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.liveness import Liveness
from ..relay.relay import RECEIVE_RETRY, relay_layer
from ..relay.session_items import CLIENT_ACK, DETACH, RESUME
from ..relay.side import RelaySide
from .acks import Acks
from .adopter import HomeAdopter
from .background import BackgroundChannels
from .handback import HandBack
from .instance import AppInstance
from .instances import AppInstances
from .keeper import SessionKeeper
from .owned import CLOSED, DETACHED, NOT_OURS, RUNNING
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
        self.instances = AppInstances()
        self.layer = layer if layer is not None else relay_layer(settings)
        self._owns_layer = layer is None  # closed by stop(): what it took goes back
        self.side = RelaySide(
            self.layer, wire.WORKER_CHANNELS, settings, on_undeliverable=self._on_undeliverable,
            peers=self._peers, on_dead=self._ifaces_dead, on_lost=self._abandon_all,
            liveness=liveness,
        )
        self.relay = self.side.relay  # app instances post straight to it (the hot path)
        # At most four ACK-only batches per heartbeat interval per interface (quiet sockets).
        self.acks = Acks(self.relay, settings.heartbeat_interval / 4)
        self.handback = HandBack(self.side, self.acks, self.instances)
        self.keeper = SessionKeeper(self.side, settings, self.instances)  # resumable sessions
        sessions = self.keeper.sessions
        self.adopter = HomeAdopter(self.side, settings, sessions=sessions.values)  # dead homes
        instances, keeper = self.instances, self.keeper
        self.side.handle({wire.EVENT: instances.on_event, wire.MESSAGE: instances.on_message,
                          wire.GONE: instances.on_gone,
                          wire.FENCE: self.handback.on_fence, DETACH: keeper.on_detach,
                          CLIENT_ACK: keeper.on_client_ack, RESUME: keeper.on_resume,
                          wire.ACK: self.adopter.on_ack})  # of what it forwarded (adopter.py)
        self._room = asyncio.Event()
        self._full_since: float | None = None  # monotonic time it last ran out of room
        self._receiving = 0  # receives waiting on the work queue (each may bring a connection)
        self._taking: asyncio.Task[None] | None = None
        self.background: BackgroundChannels | None = None  # --channels, made at start()
        self._same_redis: dict[int, bool] = {}  # id(layer): on the relay's Redis (_home)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        channel = await self.side.start()
        METRICS.owned_connections_limit.set(s.concurrency)  # the autoscaler's denominator
        self._taking = self.side.tasks.spawn(self._take_loop(), f"take {wire.CONNECT_QUEUE}")
        self.side.tasks.spawn(self.keeper.refreshing(), "session registry refresh")
        if s.channels:
            from channels.layers import get_channel_layer

            self.background = BackgroundChannels(self.application, s.channels,
                                                 get_channel_layer())
            self.side.tasks.spawn(self.background.run(), "background channels")
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
        # 0. Take no more connections (background channels keep going until step 3).
        if self._taking is not None:
            self._taking.cancel()
            await asyncio.gather(self._taking, return_exceptions=True)
        # 1. Hand every WebSocket back: re-homed on another worker, or closed with 1012.
        # Detached sessions have no socket to hand back: they end.
        self.keeper.drain()
        await self.adopter.stop()  # another worker adopts the dead homes' channels
        running = self.instances.running
        sockets = [c for c in running.values() if c.ws and c.state is RUNNING and not c.gone]
        released = len(sockets)
        if self.settings.rehome:
            # Sessions that cannot move (GraphQL over WebSocket): the client reconnects.
            for conn in [c for c in sockets if self.settings.keeps_session(c.subprotocol)]:
                conn.release(1012)
            sockets = [c for c in sockets if c.state is RUNNING]
            size, pause = self.settings.rehome_batch, self.settings.rehome_pause
            for start in range(0, len(sockets), size):
                if start:
                    await asyncio.sleep(pause)
                await asyncio.gather(*(self.handback.give(c) for c in sockets[start:start + size]))
            # The interfaces answer each REHOME with a FENCE; return what arrived meanwhile.
            while self.handback.handing_back and loop.time() < deadline - 2:
                await asyncio.sleep(0.05)
        else:
            for conn in sockets:
                conn.release(1012)
        # 2. Let the apps run their disconnect handlers and HTTP responses finish.
        tasks = [c.task for c in running.values() if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.1, deadline - loop.time() - 1))
        cancelled = 0
        for conn in list(running.values()):
            if conn.task is not None and not conn.task.done():
                conn.task.cancel()
                cancelled += 1
        # 3. Background channels: every consumer finishes the message it holds; nothing
        # more is taken (what their layer prefetched goes back as the process closes it).
        if self.background is not None:
            await self.background.stop(max(0.1, deadline - loop.time() - 0.5))
        await self.side.flushed(max(0.1, deadline - loop.time()))
        await self.stop()
        return released, cancelled

    async def stop(self) -> None:
        self.acks.stop()
        self.keeper.stop()
        await self.adopter.stop()
        await self.side.tasks.cancel()
        tasks = [c.task for c in self.instances.running.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.side.stop()
        if self._owns_layer:
            # The work queue's receives were cancelled, but a pop already waiting in Redis
            # still takes the next envelope (a socket re-homed off this very worker): closed,
            # the layer unblocks it and puts what it took back at the head of the queue.
            # Left open, the envelope died with the process and its socket was refused 1012
            # at the claim deadline: the interface resends only after a worker's death.
            await self.layer.close_pools()

    # -- taking connections ----------------------------------------------------------------

    async def _take_loop(self) -> None:
        """``TAKERS`` receives wait on the work queue at once: in a reconnect storm one pop
        takes that many envelopes, where one receive at a time paid a Redis round trip for
        each (envelopes waited up to the claim timeout in the queue). They never hold more
        than the room left: owned connections plus waiting receives stay <= concurrency."""
        await asyncio.gather(*(self._take() for _ in range(TAKERS)))

    async def _take(self) -> None:
        failures = 0
        while not self.side.draining:
            while len(self.instances.running) + self._receiving >= self.settings.concurrency:
                self._room.clear()
                await self._room.wait()
            self._receiving += 1
            try:
                message = await self.layer.receive(wire.CONNECT_QUEUE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("receive on %s failed: %r; retrying", wire.CONNECT_QUEUE, exc)
                failures += 1
                await asyncio.sleep(RECEIVE_RETRY.delay(failures))
                continue
            finally:
                self._receiving -= 1
            failures = 0
            now = time.time()
            try:
                envelope = wire.parse_envelope(message)
            except wire.WireError as exc:
                logger.warning("ignored a malformed message on %s: %s", wire.CONNECT_QUEUE, exc)
                continue
            if envelope.get("deadline", now) < now:
                # The interface has already answered 1013/503 for it.
                METRICS.messages_dropped.labels("expired").inc()
                continue
            METRICS.queue_wait.observe(max(0.0, now - envelope.get("sent_at", now)))
            self._open(envelope)

    def _open(self, envelope: wire.ConnectEnvelope) -> None:
        scope = wire.scope_from_wire(envelope)
        iface = envelope["iface"]
        scope["fleet"] = {"interface": iface, "rehomed": envelope.get("rehomed", 0),
                          "worker": self.side.channel}  # who serves it (status pages)
        acks = self.acks if scope["type"] == "websocket" and envelope.get("ack") else None
        channel = envelope.get("channel")
        # Homed only with ACKs: its messages are then kept until handled, replayed after a crash.
        homed = HomedChannel(channel, partial(self._home, envelope["conn"], iface)) if (
            channel and acks is not None) else None
        mark = envelope.get("session")
        session = self.keeper.hold(mark, iface, envelope["conn"]) if (
            mark is not None and scope["type"] == "websocket") else None
        instance = AppInstance(envelope["conn"], iface, scope, self.application, relay=self.relay,
                               settings=self.settings, acks=acks, on_end=self._ended, homed=homed,
                               session=session, on_session_end=self._session_ended)
        running = self.instances.running
        running[instance.id] = instance
        METRICS.owned(len(running))
        if len(running) >= self.settings.concurrency and self._full_since is None:
            self._full_since = time.monotonic()
        self.relay.post(iface, [wire.CLAIM, instance.id, self.side.channel], control=True)
        if session is not None:
            self.keeper.start(instance)
        instance.task = asyncio.create_task(instance.run(), name=f"conn {instance.id}")

    def _ended(self, instance: AppInstance) -> None:
        """Its app returned: room for another connection."""
        running = self.instances.running
        running.pop(instance.id, None)
        self.instances.forget(instance)
        METRICS.owned(len(running))
        if len(running) < self.settings.concurrency:
            self._full_since = None
        self._room.set()

    def _session_ended(self, instance: AppInstance, code: int, reason: str) -> None:
        self.adopter.forget(instance)
        self.keeper.ended(instance, code, reason)

    def _home(self, conn_id: str, iface: str, layer: Any) -> bool:
        """An app took its homed channel name on ``layer``: the interface is to pop it, which
        it can only if the layer is on the relay's Redis (else the name is the layer's own)."""
        same = self._same_redis.get(id(layer))
        if same is None:
            ours = [url for url, _ in getattr(self.layer, "hosts", ())]
            same = [url for url, _ in getattr(layer, "hosts", ())] == ours and bool(ours)
            self._same_redis[id(layer)] = same
            if not same:
                logger.warning(
                    "the channel layer %s is not on the relay's Redis (CHANNELS_FLEET_REDIS_URL): "
                    "its consumers' channels cannot be homed on the interfaces, so what is sent "
                    "to them while their socket moves between workers is lost", layer)
        if same:
            self.relay.post(iface, [wire.INBOX, conn_id, layer.prefix], control=True)
            instance = self.instances.running.get(conn_id)
            if instance is not None:  # its session's home may be known dead: recorded now
                # Once taken (homed.layer is set right after this call).
                asyncio.get_running_loop().call_soon(self.adopter.opened, instance)
        return same

    # -- liveness --------------------------------------------------------------------------

    def _peers(self) -> set[str]:
        """The interfaces whose death matters here: those holding our sockets, and the homes
        of our sessions' channels; the workers the adopter forwards to (adopter.py)."""
        return self.instances.ifaces() | self.adopter.watched()

    def _ifaces_dead(self, dead: set[str]) -> None:
        """Their sockets are gone: a session's app instance detaches (its client may resume
        elsewhere), any other's is abandoned."""
        for conn in list(self.instances.running.values()):
            if conn.iface not in dead or conn.state in NOT_OURS or conn.state is DETACHED:
                continue
            if conn.session is not None and conn.state is RUNNING:
                self.keeper.detach(conn)
            else:
                conn.abandon()
        self.handback.forget(dead)
        self.adopter.homes_dead(dead)
        self.adopter.workers_dead(dead)

    def _abandon_all(self) -> None:
        """Declared dead: the interfaces move our sockets to other workers (those that can
        move); the apps get their disconnect (1006) either way. Each interface is told too
        (REHOME "dead"), as it acts on a claim it still counts as ours: one made while our
        beat was late (a re-home's envelope taken after the declaration), or held by an
        interface that had not judged us yet (still in its grace after a {hb} failover) and
        never will now that we beat again. It ignores the claims it moved away already. What
        the apps handled is acknowledged first, so that such a claim's next owner is not
        replayed frames whose answers the client has."""
        s = self.settings
        for conn in list(self.instances.running.values()):
            if conn.state not in NOT_OURS:
                self.handback.acknowledge(conn)
                self.relay.post(conn.iface, [wire.REHOME, conn.id, "dead"], control=True)
            if s.rehome and conn.ws and not s.keeps_session(conn.subprotocol):
                conn.move_away(1006)
            conn.abandon()

    def _on_undeliverable(self, dest: str, items: list[wire.Item]) -> None:
        """Redis took nothing for interface ``dest`` within the layer's retry_timeout (the
        shard of its inbox down that long, or refusing writes): the app's output in ``items``
        is gone. The socket must not stay open as if still served: it is released (1013, try
        again). A RELEASE dropped in turn (or the app's own close, or its END) is posted again
        RELEASE_RETRY later, until Redis takes it. Not for a socket given up already
        (re-homed away, or its interface dead)."""
        for conn_id in {item[1] for item in items if item[1]}:  # an ACK item names none
            conn = self.instances.running.get(conn_id)  # None: its app finished
            if conn is not None and conn.state in NOT_OURS:
                continue
            if conn is not None and conn.state is not CLOSED:
                METRICS.messages_dropped.labels("undeliverable").inc()
                conn.release(1013)
            else:
                release = [wire.RELEASE, conn_id, 1013]
                asyncio.get_running_loop().call_later(
                    RELEASE_RETRY, partial(self.relay.post, dest, release, control=True))
