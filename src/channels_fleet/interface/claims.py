"""From a connect envelope to its claim: send it, bound the wait, refuse, send once more.

Every connect envelope, for a new connection, a re-homed socket or a second try, goes out
through :meth:`Claims.send`, which arms the claim deadline and answers a full work queue.
The rules, in one place:

- **Deadline**: ``CHANNELS_FLEET_CLAIM_TIMEOUT`` for a new connection; twice that for a
  re-homed socket (its client is connected and content to wait; a rolling update's new worker
  may still be starting).
- **Refusal** (a full work queue ``fleet.connect``, or nobody claimed in time): a new
  connection gets **1013** (try again later; HTTP 503); a re-homed socket, whose app had
  already accepted it elsewhere, gets **1012** (service restart: reconnect).
- **No room**: when every live worker said in its last heartbeat that it is at its
  ``--concurrency`` cap (or draining), a new connection is refused at once (1013 / 503)
  rather than sent to wait out the deadline (``relay/room.py``). A re-homed socket's envelope
  still goes out and waits: a rolling update's next worker may be starting.
- **Once more**: a connection still unclaimed at its deadline is sent again, once, if a worker
  it watches died after the envelope went out: that worker may have taken the envelope and
  died before claiming it. The first copy, if still queued, is past its deadline then, so
  whoever takes it drops it.
- **Current claim**: every envelope, a second try included, is a new claim with an id of its
  own (``wire.claim_id``); the owner echoes it in all it relays. Items of any other claim (an
  earlier owner's, the same worker's earlier app instance, a late claim of an envelope sent
  before) are ignored, and a claim that comes when none is awaited is answered GONE; but a
  home's DETACHED connection (a session resumed elsewhere) is claimed again by each worker
  that takes its session over: its homed channel's messages go there.
- **Accepted**: a re-homed socket's new app must accept within ``CHANNELS_FLEET_ACCEPT_TIMEOUT``
  of its claim, or the socket is closed with **1012** (a new connection's accept is bounded
  by the server's connect timeout): no socket stays open with no app serving it.
- **Claimed**: held client events go to the owner, in order, once no old owner's RETURN is
  awaited (``fence``, see rehome.py); that wait is bounded by the same deadline. A lost
  owner's unacknowledged frames (``replay``, see replay.py) go before them, or, if the full
  buffer had dropped some, the socket is closed with 1012: never re-homed with a hole.

    claims = Claims(side, settings, conns, writer)
    if await claims.send(conn):           # False: refused, the client has its answer
        ...
    claims.tell_gone(conn, 1006)          # the client left: the owner hears it once
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from channels.exceptions import ChannelFull

from ..observability.metrics import METRICS
from ..relay import session_items, wire
from ..relay.sessions import SessionEntry
from ..relay.side import RelaySide
from .client import (
    AWAITING_CLAIM,
    CLAIMED,
    DETACHED,
    REHOMING,
    ClientConn,
    ClientEvent,
    Connections,
)
from .edge import ClientWriter
from .replay import Replay
from .settings import InterfaceSettings

logger = logging.getLogger(__name__)

#: A re-homed socket waits this many times CHANNELS_FLEET_CLAIM_TIMEOUT for a new owner.
REHOME_CLAIM_FACTOR = 2


def refusal_code(conn: ClientConn) -> int:
    """The close code of a connection no worker can take: 1012 once re-homed, else 1013."""
    return 1012 if conn.rehomed else 1013


class Claims:
    """Connect envelopes and their claims, for every connection of one gateway."""

    def __init__(self, side: RelaySide, settings: InterfaceSettings, conns: Connections,
                 writer: ClientWriter) -> None:
        self.side = side
        self.settings = settings
        self.conns = conns
        self.writer = writer
        self._worker_died_at = 0.0  # monotonic time a watched worker was last found dead

    def deadline(self, conn: ClientConn) -> float:
        """Seconds ``conn`` may wait for a claim."""
        factor = REHOME_CLAIM_FACTOR if conn.rehomed else 1
        return self.settings.claim_timeout * factor

    async def send(self, conn: ClientConn) -> bool:
        """Send ``conn``'s connect envelope and arm its deadline; False if it was refused.

        A refused connection has been answered (``refusal_code``) and finished.
        """
        if conn.finished:
            return False  # the client left before its (re-)send: no app should start for it
        if not conn.rehomed and self.side.liveness.workers_full:
            METRICS.messages_dropped.labels("workers_full").inc()
            await self.refuse(conn, refusal_code(conn))
            return False
        deadline = self.deadline(conn)
        envelope = wire.connect_envelope(
            self.side.channel, conn.await_claim(), conn.scope, deadline, rehomed=conn.rehomed,
            ack=conn.unacked is not None, channel=conn.channel,
            session=conn.session.mark() if conn.session is not None else None)
        self._arm(conn, deadline)
        try:
            await self.side.send_now(wire.CONNECT_QUEUE, envelope)
        except ChannelFull:
            logger.warning("work queue %s full: refusing %s", wire.CONNECT_QUEUE, conn.id)
            METRICS.channel_full.labels("send").inc()
            METRICS.messages_dropped.labels("channel_full").inc()
            await self.refuse(conn, refusal_code(conn))
            return False
        return True

    def resume(self, conn: ClientConn, entry: SessionEntry, last: int, origin: str,
               expired: Callable[[ClientConn], None]) -> None:
        """Ask the worker holding ``conn``'s session to take it over for a new claim (RESUME,
        straight to it: not the work queue). Its CLAIM is awaited as an envelope's is; no
        answer within the claim deadline: ``expired(conn)``."""
        assert conn.session is not None  # a resumable socket
        claim = conn.await_claim()
        resume = [conn.session.id, last, origin]
        self.side.relay.post(entry.worker, [session_items.RESUME, claim, resume], control=True)
        conn.stop_timer()
        conn.timer = asyncio.get_running_loop().call_later(
            self.settings.claim_timeout, expired, conn)

    async def on_claim(self, claim: str, owner: str, sender: str) -> None:
        """A worker's CLAIM (the item's handler): it owns the connection from now on, if this
        claim is awaited."""
        conn = self.conns.current(claim)
        if conn is not None and conn.state is DETACHED:
            self._reclaim(conn, owner)
            return
        if conn is None or conn.state is not AWAITING_CLAIM:
            # Gone, ended by us or sent again (a claim of an earlier envelope) before this
            # claim: the claimer cleans up.
            self.side.relay.post(owner, [wire.GONE, claim, 1006], control=True)
            return
        conn.claimed_by(owner)
        METRICS.relay_roundtrip.observe(time.monotonic() - conn.sent_at)
        if conn.fence is None:
            self._await_accept(conn)  # while fenced, the deadline bounds the wait for the RETURN
        self._deliver_held(conn)

    def _reclaim(self, conn: ClientConn, owner: str) -> None:
        """A home's DETACHED connection: the worker that took its session over (a re-home
        of the socket elsewhere) gets the homed channel from now on. First what the old owner
        had not handled (an owner not yet found dead, or one that drained and dropped what
        came after it gave the socket back), then what was held; kept until handled."""
        replay = conn.unacked.detach("dead") if conn.unacked is not None else None
        events = conn.take_held()
        if replay is not None:
            METRICS.messages_dropped.labels("rehome_dead").inc(replay.lost)
            events[:0] = replay.frames
        conn.reclaimed(owner)
        post, claim, unacked = self.side.relay.post, conn.claim_id, conn.unacked
        for event in events:
            post(owner, [wire.EVENT, claim, event], control=True)
            if unacked is not None:
                unacked.record(event)

    def unfence(self, conn: ClientConn) -> None:
        """Stop waiting for the old owner's RETURN; held events go to a new owner, if any."""
        conn.clear_fence()
        if conn.state in CLAIMED:
            self._await_accept(conn)
            self._deliver_held(conn)

    def worker_died(self) -> None:
        """A worker this gateway watches died: unclaimed envelopes may have died with it."""
        self._worker_died_at = time.monotonic()

    def refuse_replay(self, conn: ClientConn, replay: Replay) -> None:
        """Close with 1012 a socket whose lost owner's frames cannot all be replayed."""
        logger.warning("%s: %d unacknowledged frames were dropped from the full buffer: "
                       "closed 1012, not re-homed", conn.id, replay.lost)
        METRICS.replay_overflows.labels(replay.cause).inc()
        METRICS.messages_dropped.labels("rehome_dead").inc(replay.lost + len(replay.frames))
        self.side.tasks.spawn(self.refuse(conn, 1012), f"refuse {conn.id}")

    def _deliver_held(self, conn: ClientConn) -> None:
        if conn.state not in CLAIMED or conn.fence is not None:
            return
        assert conn.owner is not None  # claimed
        events = conn.take_held()  # bounded by pending_limit (+ what an old owner returned)
        replay, conn.replay = conn.replay, None
        if replay is not None:
            if replay.lost:
                self.refuse_replay(conn, replay)
                return
            METRICS.replayed_frames.labels(replay.cause).inc(len(replay.frames))
            METRICS.replay_duplicates.labels(replay.cause).inc(replay.duplicates)
            events[:0] = replay.frames  # after the new app's connect, before any new frame
        post, unacked, claim = self.side.relay.post, conn.unacked, conn.claim_id
        for event in events:
            post(conn.owner, [wire.EVENT, claim, event], control=True)
            if unacked is not None:
                unacked.record(event)

    def _await_accept(self, conn: ClientConn) -> None:
        """Claimed: a re-homed socket's new app has ``accept_timeout`` to accept (a new one's
        accept is bounded by the server's connect timeout)."""
        if conn.state is REHOMING:
            self._arm(conn, self.settings.accept_timeout)
        else:
            conn.stop_timer()

    def _arm(self, conn: ClientConn, deadline: float) -> None:
        conn.stop_timer()
        conn.timer = asyncio.get_running_loop().call_later(deadline, self._expired, conn)

    def _expired(self, conn: ClientConn) -> None:
        conn.timer = None
        if conn.fence is not None and conn.state in CLAIMED:
            logger.warning("%s: no RETURN from the old owner; replaying what it had not "
                           "acknowledged", conn.id)
            self.unfence(conn)
        elif conn.state is REHOMING:
            # Open, and no app serves it (stuck in its connect: a database away...): the
            # client had better reconnect than wait on a socket nothing answers.
            logger.warning("%s: the re-homed socket's app did not accept within %g s; "
                           "closing 1012", conn.id, self.settings.accept_timeout)
            self.side.tasks.spawn(self.refuse(conn, 1012), f"refuse {conn.id}")
        elif conn.state is not AWAITING_CLAIM:
            return
        elif self._worker_died_at > conn.sent_at and not conn.resent:
            logger.info("%s: unclaimed after a worker died; connect sent again", conn.id)
            conn.resent = True
            self.side.tasks.spawn(self.send(conn), f"resend {conn.id}")
        else:
            logger.warning("%s: no worker claimed it in time", conn.id)
            METRICS.messages_dropped.labels("unclaimed").inc()
            self.side.tasks.spawn(self.refuse(conn, refusal_code(conn)), f"refuse {conn.id}")

    async def refuse(self, conn: ClientConn, code: int) -> None:
        """End a connection no owner can take (or keep) with ``code``; its owner, if any, is
        told."""
        conn.stop_timer()
        self.tell_gone(conn, code)
        await self.writer.end(conn, code)

    def tell_leaving(self, conn: ClientConn, code: int) -> None:
        """The interface ends ``conn`` with ``code``: a session's socket at shutdown (1001)
        detaches (its client resumes elsewhere); anything else ends as a plain socket's."""
        if conn.session is not None and code == 1001:
            self.tell_detached(conn, code)
        else:
            self.tell_gone(conn, code)

    def tell_detached(self, conn: ClientConn, code: int) -> None:
        """Tell the owner (once) that ``conn``'s socket ended and its session did not (DETACH):
        the app keeps running, its output kept for a resume."""
        owner = conn.take_owner_to_tell()
        if owner is not None:
            self.side.relay.post(owner, [session_items.DETACH, conn.claim_id, code], control=True)

    def tell_gone(self, conn: ClientConn, code: int, event: ClientEvent | None = None) -> None:
        """Tell the owner (once) that the client side of ``conn`` is over: with the client's
        own disconnect ``event`` when there is one, else GONE with ``code``. A claim arriving
        later is answered with GONE (:meth:`on_claim`)."""
        owner = conn.take_owner_to_tell()
        if owner is None:
            return
        if event is not None:
            self.side.relay.post(owner, [wire.EVENT, conn.claim_id, event], control=True)
        else:
            self.side.relay.post(owner, [wire.GONE, conn.claim_id, code], control=True)
