"""The moves of a worker's resumable sessions (docs/resume-protocol.md), and their registry.

A session's app instance (session.py holds its state) moves through the states of owned.py:

- **start**: its connect envelope carried ``"session"``; the registry says where it runs. A
  mark naming a ``home`` (the socket was resumed away from it, then re-homed here): the home
  claim becomes an alias and the home is sent ``CLAIM`` of it (its connection relays here).
- **detach** (``DETACH`` from its interface, or that interface died): the app runs on, its
  sends go to the outbox only, the window (``CHANNELS_FLEET_RESUME_WINDOW``) runs.
- **resume** (``RESUME`` from any interface, routed here by the registry): refused with
  ``NO_SESSION`` (unknown, ended, origin, unreplayable, draining), or attached to the new
  socket: the first socket, if still there, is superseded (4001); then ``CLAIM``, ``RESUMED``
  and the outbox past the client's last frame, in order, before anything live.
- **end** (the app closed or returned, the client closed, the window or the outbox ran out, a
  drain, an unreplayable resume): the app gets its disconnect, the registry entry goes, and the
  home interface (which keeps the homed channel while the session lives) gets ``SESSION_END``.

Registry writes run in tasks of their own, one after another per session (never in the way of
an app instance); a failure is logged once per cause: the entry's TTL (window plus heartbeat
TTL) clears what a failed delete leaves. Live sessions' entries are put again every half TTL.

    keeper = SessionKeeper(side, settings, instances)
    side.handle({DETACH: keeper.on_detach, CLIENT_ACK: keeper.on_client_ack,
                 RESUME: keeper.on_resume})
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.session_items import (
    NO_SESSION,
    RESUMED,
    SESSION_END,
    SUPERSEDE,
    SessionMark,
    parse_client_ack,
    parse_resume,
)
from ..relay.sessions import SessionEntry, SessionRegistry
from ..relay.side import RelaySide
from ..resume.envelope import ProtocolError
from .instance import AppInstance
from .instances import AppInstances
from .owned import DETACHED, HANDED, HANDING_BACK, NOT_OURS, RUNNING
from .session import UNCOUNTED, HeldSession
from .settings import WorkerSettings

logger = logging.getLogger(__name__)

#: The close code a superseded socket gets (docs/resume-protocol.md).
SUPERSEDED = 4001


class SessionKeeper:
    """The resumable sessions of one host: by session id, and their moves."""

    def __init__(self, side: RelaySide, settings: WorkerSettings, instances: AppInstances,
                 registry: SessionRegistry | None = None) -> None:
        self.side = side
        self.relay = side.relay
        self.settings = settings
        self.instances = instances
        self.registry = registry if registry is not None else SessionRegistry(
            side.layer, settings.key_prefix)
        self.ttl = settings.resume_window + settings.heartbeat_ttl
        self.sessions: dict[str, AppInstance] = {}  # by session id, until the session ends
        self._failures: set[str] = set()  # causes logged already

    def hold(self, mark: SessionMark, iface: str, claim: str) -> HeldSession:
        """The state of a session whose envelope (``iface``, ``claim``) carried ``mark``."""
        return HeldSession(mark, home=iface, claim=claim, settings=self.settings)

    # -- start, detach, end ----------------------------------------------------------------

    def start(self, instance: AppInstance) -> None:
        """Its app instance was claimed: the registry says where it runs."""
        session = self._session(instance)
        self.sessions[session.id] = instance
        self._put(instance, session)
        if session.home_claim != instance.id:
            # Resumed away from its home, then re-homed here: the home's DETACHED connection
            # forwards the homed channel to whoever claims it; its messages reach this
            # instance by alias, uncounted (the current interface never recorded them).
            self.instances.alias(instance, session.home_claim)
            self.relay.post(session.home, [wire.CLAIM, session.home_claim, self.side.channel],
                            control=True)

    def detach(self, instance: AppInstance) -> None:
        """Its socket is lost, the session is not: kept for the window, sends buffered."""
        session = self._session(instance)
        instance.detach()
        session.socket = False
        METRICS.sessions_detached.inc()
        window = self.settings.resume_window
        if window <= 0:
            instance.end_session(1006, "window")
            return
        session.window = asyncio.get_running_loop().call_later(
            window, instance.end_session, 1006, "window")
        self._put(instance, session)

    def ended(self, instance: AppInstance, code: int, reason: str) -> None:
        """The instance's ``on_session_end``: over for good (``reason``: one of
        metrics.SESSION_END_REASONS)."""
        session = self._session(instance)
        session.cancel_window()
        if self.sessions.get(session.id) is instance:
            del self.sessions[session.id]
        if not session.socket:
            METRICS.sessions_detached.dec()
        if instance.state in NOT_OURS:
            # Its socket moved to another worker (handed back, or this one declared dead):
            # the session goes on there, with the home and the registry as they are.
            session.ended = "moved"
            return
        if reason == "client" and code == 1002:
            reason = "protocol"  # the interface's answer to a broken envelope
        session.ended = reason
        instance.close()
        instance.disconnect(code)
        METRICS.sessions_ended.labels(reason).inc()
        self._write(session, None)
        code = code if 1000 <= code <= 4999 else 1000
        self.relay.post(session.home, [SESSION_END, session.home_claim, [code, reason]],
                        control=True)

    def drain(self) -> int:
        """A draining worker: detached sessions cannot be handed back (no socket): they end
        (1001). Returns how many."""
        detached = [i for i in self.sessions.values() if i.state is DETACHED]
        for instance in detached:
            instance.end_session(1001, "drain")
        return len(detached)

    async def refreshing(self) -> None:
        """Put every live session's entry again each half TTL: an attached session outlives
        any one TTL, and a killed worker's entries still go within one."""
        while True:
            await asyncio.sleep(self.ttl / 2)
            for instance in list(self.sessions.values()):
                self._put(instance, self._session(instance))

    def stop(self) -> None:
        """The host stops: no window ends a session after it."""
        for instance in self.sessions.values():
            self._session(instance).cancel_window()

    # -- items from the interfaces ---------------------------------------------------------

    async def on_detach(self, claim: str, code: int, sender: str) -> None:
        """DETACH: the socket of ``claim`` ended without ending its session."""
        instance = self.instances.running.get(claim)
        if instance is None or instance.session is None or instance.state is not RUNNING:
            return  # ended, moved, or a superseded socket's (its claim is an alias now)
        self.detach(instance)

    async def on_client_ack(self, claim: str, seq: int, sender: str) -> None:
        """CLIENT_ACK: the client has every server frame up to ``seq``."""
        instance = self.instances.find(claim)
        if instance is None or instance.session is None:
            return
        try:
            instance.session.outbox.ack(parse_client_ack(seq))
        except (wire.WireError, ProtocolError) as exc:
            self._once("client-ack", "%s: ignored a client ack from %s: %s", claim, sender, exc)

    async def on_resume(self, claim: str, payload: list[Any], sender: str) -> None:
        """RESUME: the interface ``sender`` holds a socket resuming a session as ``claim``."""
        try:
            session_id, last, origin = parse_resume(payload)
        except wire.WireError as exc:
            logger.warning("ignored a resume from %s: %s", sender, exc)
            return
        instance = self.sessions.get(session_id)
        if instance is None or instance.session is None:
            self._refuse(sender, claim, "unknown")
            return
        session, state = instance.session, instance.state
        if state is HANDING_BACK or state is HANDED:
            return  # moving to another worker: the interface's claim deadline answers
        if session.ended is not None or instance.gone or (
                state is not RUNNING and state is not DETACHED):
            self._refuse(sender, claim, "ended")
        elif self.side.draining:
            self._refuse(sender, claim, "draining")
        elif origin != _origin(instance.scope):
            self._refuse(sender, claim, "origin")
        elif not session.outbox.can_replay(last):
            self._refuse(sender, claim, "unreplayable")
            instance.end_session(1006, "unreplayable")
        else:
            self._attach(instance, session, claim, sender, last)

    # -- inside ----------------------------------------------------------------------------

    def _attach(self, instance: AppInstance, session: HeldSession, claim: str, iface: str,
                last: int) -> None:
        """The socket of ``claim`` at ``iface`` takes the session over."""
        if instance.state is RUNNING:
            # The first socket is still there (its client's network changed): it gives way.
            self.relay.post(instance.iface, [SUPERSEDE, instance.id, SUPERSEDED], control=True)
        else:
            METRICS.sessions_detached.dec()
        old = instance.id
        if old == session.home_claim:
            # Its first claim becomes the home's: what the home relayed under it is counted
            # on from here (its Unacked goes on keeping what is not handled).
            session.home_counts.taken, session.home_counts.handled = (
                instance.taken, instance.handled)
        self.instances.rekey(instance, claim)
        instance.attach(iface, claim)
        session.socket = True
        session.cancel_window()
        # The new interface's Unacked starts empty: its ACK counts start at 0, and what waits
        # for the app came under the earlier claim (not counted for this one).
        instance.taken = instance.handled = 0
        instance.mark_queued(UNCOUNTED, old)
        self._put(instance, session)
        post = self.relay.post
        post(iface, [wire.CLAIM, claim, self.side.channel], control=True)
        channel = instance.homed.name if instance.homed is not None else ""
        post(iface, [RESUMED, claim, [session.ack, instance.subprotocol or "", channel,
                                      session.home, session.home_claim]], control=True)
        frames = session.replay(last)
        for frame in frames:
            post(iface, [wire.SEND, claim, frame], control=True)
        METRICS.session_frames_replayed.inc(len(frames))

    def _refuse(self, iface: str, claim: str, reason: str) -> None:
        self.relay.post(iface, [NO_SESSION, claim, reason], control=True)

    def _session(self, instance: AppInstance) -> HeldSession:
        session = instance.session
        if session is None:
            raise ValueError(f"{instance.id} is not a resumable session's")
        return session

    def _put(self, instance: AppInstance, session: HeldSession) -> None:
        iface = instance.iface if session.socket else ""  # "": detached
        self._write(session, SessionEntry(self.side.channel, instance.id, iface))

    def _write(self, session: HeldSession, entry: SessionEntry | None) -> None:
        """Put (or, for None, delete) the session's registry entry, after its earlier writes."""
        session.write = self.side.tasks.spawn(
            self._registry(session.id, entry, session.write), f"session {session.id} registry")

    async def _registry(self, session_id: str, entry: SessionEntry | None,
                        after: asyncio.Task[None] | None) -> None:
        if after is not None and not after.done():
            await asyncio.wait({after})
        try:
            if entry is None:
                await self.registry.delete(session_id)
            else:
                await self.registry.put(session_id, entry, self.ttl)
        except Exception as exc:
            self._once(type(exc).__name__, "session registry write failed: %r (the entries' "
                       "TTL clears what is left; resumes may find no session)", exc)

    def _once(self, cause: str, message: str, *args: Any) -> None:
        if cause not in self._failures:
            self._failures.add(cause)
            logger.warning(message, *args)


def _origin(scope: dict[str, Any]) -> str:
    """The handshake's Origin header, "" if none (as the interface sends it in RESUME)."""
    for name, value in scope.get("headers", ()):
        if bytes(name).lower() == b"origin":
            return bytes(value).decode("latin-1")
    return ""
