"""Re-homing on the interface side: a WebSocket whose worker drains or dies moves to a live one.

The socket stays open. A new connect envelope (a new claim, ``rehomed`` = n) goes to the work queue
(:class:`~.claims.Claims`, deadline and refusal included) and the new owner runs the app from
``websocket.connect``; client events are held meanwhile. A draining worker gives a socket up
with REHOME; the gateway answers with a FENCE (nothing more will come to it), and the worker
sends back the events its app never took with RETURN, which go to the new owner first (after a
frame the app took and had not finished, if its wait ran out: replayed, marked). A dead
worker returns nothing: the frames it had not acknowledged (:mod:`.replay`) go to the new owner
first instead, marked as replayed; they also stand in for a RETURN that never comes.

    rehoming = Rehoming(side, claims)
    rehoming.rehome(conn, "dead")
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.side import RelaySide
from .claims import Claims
from .client import AWAITING_CLAIM, CLAIMED, ClientConn
from .replay import Unacked

logger = logging.getLogger(__name__)


class Rehoming:
    """Hands a gateway's WebSockets to new owners; one per gateway."""

    def __init__(self, side: RelaySide, claims: Claims) -> None:
        self.side = side
        self.claims = claims
        self.settings = claims.settings

    def unacked(self) -> Unacked | None:
        """A new WebSocket's buffer of unacknowledged frames (None: re-homing is off)."""
        s = self.settings
        return Unacked(s.replay_limit, s.replay_bytes) if s.rehome else None

    async def on_rehome(self, claim: str, cause: str, sender: str) -> None:
        """A worker's REHOME: re-home the socket if this is its current claim."""
        conn = self.claims.current(claim)
        if conn is None or not conn.ws or conn.state not in CLAIMED:
            # Nothing to re-home, or an earlier claim's (re-homed away while the worker was
            # cut off): let the worker forget it.
            if sender:
                self.fence(sender, claim)
            return
        self.rehome(conn, "drain")

    async def on_return(self, claim: str, events: list[Any], sender: str) -> None:
        """The old owner's events of a re-homed connection: they go first, in order."""
        conn = self.claims.fenced(claim)
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
            conn.owner = None  # dead: nobody to tell
            self.claims.refuse_replay(conn, replay)
            return
        if replay is not None and (replay.frames or replay.lost):
            # dead: the next owner's first events; drain: only if no RETURN comes instead.
            conn.replay = replay
        old, conn.owner = conn.owner, None
        if cause == "drain" and old is not None:
            # Events sent to the old owner after it let go come back with its RETURN.
            conn.fence, conn.fence_id = old, conn.claim_id
            self.fence(old, conn.claim_id)
        conn.stop_timer()
        conn.move(AWAITING_CLAIM)
        conn.rehomed += 1
        conn.app_accepted = False
        conn.resent = False  # a new envelope: it may be sent again once too
        conn.handover_at = time.monotonic()
        METRICS.rehomed(cause)
        logger.debug("%s: re-homing (%s, time %d)", conn.id, cause, conn.rehomed)
        self.side.tasks.spawn(self.claims.send(conn), f"re-home {conn.id}")

    def fence(self, worker: str, claim: str) -> None:
        """Tell ``worker`` that nothing more of ``claim`` comes to it: RETURN what it holds."""
        self.side.relay.post(worker, [wire.FENCE, claim, None], control=True)
