"""An owner lost: a WebSocket whose worker drains or dies moves to a live one; what cannot move
(HTTP, re-homing off, a session the app keeps) is ended. A resumable session's DETACHED
connection (at its home: no socket) waits, holding its homed channel's messages, for the worker
that takes the session over to claim it (:meth:`Rehoming.orphan`); none by the deadline: the
session died with its worker, the connection ends. The interface's one reaction to a
worker's death, and to its own (:meth:`Rehoming.declared_dead`: to it, every owner died).

The socket stays open. A new connect envelope (a new claim, ``rehomed`` = n) goes to the work queue
(:class:`~.claims.Claims`, deadline and refusal included) and the new owner runs the app from
``websocket.connect``; client events are held meanwhile. A draining worker gives a socket up
with REHOME; the gateway answers with a FENCE (nothing more will come to it), and the worker
sends back the events its app never took with RETURN, which go to the new owner first (after a
frame the app took and had not finished, if its wait ran out: replayed, marked). A dead
worker returns nothing: the frames it had not acknowledged (:mod:`.replay`) go to the new owner
first instead, marked as replayed; they also stand in for a RETURN that never comes.

    rehoming = Rehoming(side, settings, conns, claims, writer, end_detached)
    rehoming.owners_died({"fleet.worker.a!x"})     # RelaySide's on_dead
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.side import RelaySide
from .claims import REHOME_CLAIM_FACTOR, Claims
from .client import AWAITING_CLAIM, CLAIMED, DETACHED, FINISHED, ClientConn, Connections
from .edge import ClientWriter
from .replay import Unacked
from .settings import InterfaceSettings

logger = logging.getLogger(__name__)


class Rehoming:
    """What a gateway does when it loses an owner (drain or death): re-home or end; one per
    gateway."""

    def __init__(self, side: RelaySide, settings: InterfaceSettings, conns: Connections,
                 claims: Claims, writer: ClientWriter,
                 end_detached: Callable[[ClientConn], None]) -> None:
        self.side = side
        self.settings = settings
        self.conns = conns
        self.claims = claims
        self.writer = writer
        self.end_detached = end_detached  # finish and forget a home's DETACHED connection
        self._lost_marks = itertools.count(1)
        self._lost_mark: int | None = None  # declared dead: the mark to act on, once

    def unacked(self) -> Unacked | None:
        """A new WebSocket's buffer of unacknowledged frames (None: re-homing is off)."""
        s = self.settings
        return Unacked(s.replay_limit, s.replay_bytes) if s.rehome else None

    async def on_rehome(self, claim: str, cause: str, sender: str) -> None:
        """A worker's REHOME: re-home the socket if this is its current claim. Cause "dead":
        the worker was declared dead (by us or another process) and dropped the connection:
        as for a dead owner, unless the claim is past (moved away when we declared it dead)."""
        conn = self.conns.current(claim)
        if cause == "dead":
            if conn is not None and conn.state is not FINISHED and conn.owner == sender:
                self.claims.worker_died()  # it dropped the envelopes it had taken, too
                self._owner_lost(conn)
            return
        if conn is None or not conn.ws or conn.state not in CLAIMED:
            # Nothing to re-home, or an earlier claim's (re-homed away while the worker was
            # cut off): let the worker forget it.
            if sender:
                self.fence(sender, claim)
            return
        self.rehome(conn, "drain")

    async def on_return(self, claim: str, events: list[Any], sender: str) -> None:
        """The old owner's events of a re-homed connection: they go first, in order."""
        conn = self.conns.fenced(claim)
        if conn is None:
            return
        # The RETURN holds every event the old app never took; only a frame it took and did
        # not finish is replayed before them, marked, as after a crash.
        conn.replay = conn.replay.unfinished() if conn.replay is not None else None
        conn.held = [*events, *conn.held]
        self.claims.unfence(conn)

    def rehome(self, conn: ClientConn, cause: str) -> None:
        """Hand a WebSocket to a new owner: same socket, the app from websocket.connect again.

        ``cause``: "drain" (the owner gave it back) or "dead" (the owner's heartbeat expired).
        From here client events are held; the envelope goes out in a task of its own, so the
        envelopes of a batch of REHOMEs share round trips.
        """
        replay = conn.unacked.detach(cause) if conn.unacked is not None else None
        if replay is not None and replay.lost and cause == "dead":
            conn.lose_owner()
            self.claims.refuse_replay(conn, replay)
            return
        if replay is not None and (replay.frames or replay.lost):
            # dead: the next owner's first events; drain: only if no RETURN comes instead.
            conn.replay = replay
        claim = conn.claim_id
        old = conn.hand_over()
        if cause == "drain" and old is not None:
            # Events sent to the old owner after it let go come back with its RETURN.
            conn.set_fence(old, claim)
            self.fence(old, claim)
        METRICS.rehomed(cause)
        logger.debug("%s: re-homing (%s, time %d)", conn.id, cause, conn.rehomed)
        self.side.tasks.spawn(self.claims.send(conn), f"re-home {conn.id}")

    def fence(self, worker: str, claim: str) -> None:
        """Tell ``worker`` that nothing more of ``claim`` comes to it: RETURN what it holds."""
        self.side.relay.post(worker, [wire.FENCE, claim, None], control=True)

    # -- an owner's death ------------------------------------------------------------------

    def owners_died(self, dead: set[str]) -> None:
        """Workers this gateway watches died (RelaySide's on_dead): their sockets are re-homed
        or ended 1012, and what a fenced-off old owner held died with it."""
        self.claims.worker_died()
        for conn in self.conns.values():
            if conn.state is FINISHED:
                continue
            if conn.owner in dead:
                self._owner_lost(conn)
            if conn.fence in dead:
                # What it held died with it: what it had not acknowledged is replayed instead.
                # (After the owner's re-home: held events wait for the next owner.)
                self.claims.unfence(conn)

    def _owner_lost(self, conn: ClientConn) -> None:
        """``conn``'s owner died: re-homed, orphaned (a home's DETACHED connection) or ended
        1012 (HTTP: 503)."""
        s = self.settings
        if conn.state is DETACHED:
            self.orphan(conn)
        elif conn.ws and s.rehome and not self.side.draining and not s.keeps_session(
                conn.subprotocol):
            self.rehome(conn, "dead")
        else:
            METRICS.messages_dropped.labels("dead_owner").inc()
            conn.take_owner_to_tell()  # nobody to tell
            self.writer.spawn_end(conn, 1012)

    def orphan(self, conn: ClientConn) -> None:
        """A DETACHED connection's owner died. If its session was attached elsewhere, the
        socket there is re-homed and the new owner claims this connection (Claims.on_claim):
        until then the homed channel's messages are held. No claim by the deadline (that
        re-home's wait, once the death is seen): the session died with its worker."""
        conn.orphan()
        replay = conn.unacked.detach("dead") if conn.unacked is not None else None
        if replay is not None:  # what the dead owner had not handled goes first
            METRICS.messages_dropped.labels("rehome_dead").inc(replay.lost)
            conn.held[:0] = replay.frames
        wait = (2 * self.settings.claim_timeout * REHOME_CLAIM_FACTOR
                + self.settings.heartbeat_ttl)
        conn.timer = asyncio.get_running_loop().call_later(wait, self._orphan_expired, conn)

    def _orphan_expired(self, conn: ClientConn) -> None:
        conn.timer = None
        if conn.state is DETACHED and conn.owner is None:
            METRICS.messages_dropped.labels("dead_owner").inc(len(conn.held))
            self.end_detached(conn)

    def declared_dead(self) -> None:
        """Our heartbeat lapsed (a stall: CPU starvation, a pause, a partition) and the owners
        dropped our connections: to us they are dead owners. Their last ACKs may be waiting in
        our channel (sent while we stalled): a mark sent through it comes back after them, so
        what the apps handled is not replayed. Should it not come back, the TTL acts for it."""
        relay = self.side.relay
        mark = self._lost_mark = next(self._lost_marks)
        relay.post(relay.channel, [wire.CAUGHT_UP, "", mark], control=True)
        asyncio.get_running_loop().call_later(
            self.settings.heartbeat_ttl, self._rehome_all_lost, mark)

    async def on_caught_up(self, _: str, mark: int, sender: str) -> None:
        """The ``wire.CAUGHT_UP`` handler: our mark came back through our own channel."""
        if sender == self.side.relay.channel:
            self._rehome_all_lost(mark)

    def _rehome_all_lost(self, mark: int) -> None:
        """The sockets are still open here, so they are re-homed as for an owner that died;
        what cannot be is closed 1012."""
        if mark != self._lost_mark:
            return  # acted on already
        self._lost_mark = None
        owners = self.conns.owners()
        for conn in self.conns.values():
            if conn.state is FINISHED:
                continue
            if conn.owner is not None:
                # An owner that had not declared us dead yet still runs the app: end it there
                # (the others dropped it already). Its END names a claim past by then.
                self.side.relay.post(conn.owner, [wire.GONE, conn.claim_id, 1006], control=True)
            elif conn.state is AWAITING_CLAIM and not (conn.session and conn.session.resuming):
                # Its claim may come from a worker that took the envelope and then dropped it
                # with our other connections: ask again, as a new claim. (A resume unanswered
                # becomes a new session at its own deadline.)
                self.side.tasks.spawn(self.claims.send(conn), f"connect again {conn.id}")
        self.owners_died(owners)
