"""Re-homing on the interface side: a WebSocket whose worker drains or dies moves to a live one.

The socket stays open. A new connect envelope (``rehomed`` = n) goes to the work queue and the
new owner runs the app from ``websocket.connect``; client events are held meanwhile. A draining
worker gives a socket up with REHOME; the gateway answers with a FENCE (nothing more will come
to it), and the worker sends back the events it had not handled with RETURN, which go to the
new owner first. A dead worker returns nothing: what it was sent after its last message for the
connection is counted as dropped.

    rehoming = Rehoming(gateway)
    rehoming.rehome(conn, "dead")
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..observability.metrics import METRICS
from ..relay import wire

if TYPE_CHECKING:
    from .gateway import Conn, Gateway

logger = logging.getLogger(__name__)

#: A re-homed socket waits this many times CHANNELS_FLEET_CLAIM_TIMEOUT for a new owner.
REHOME_CLAIM_FACTOR = 2


class Rehoming:
    """Hands the gateway's WebSockets to new owners; one per gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_rehome(self, conn: Conn | None, conn_id: str, sender: str) -> None:
        """A worker's REHOME: re-home the socket if it is still the owner's to give up."""
        if conn is None or conn.finished or not conn.ws or (sender and sender != conn.owner):
            # Nothing to re-home, or not the owner's (re-homed away while it was cut off):
            # let the worker forget it.
            self.fence(sender, conn_id)
        else:
            self.rehome(conn, "drain")

    def on_return(self, conn: Conn | None, sender: str, events: list[Any]) -> None:
        """The old owner's events of a re-homed connection: they go first, in order."""
        if conn is None or conn.finished or conn.fence is None or sender != conn.fence:
            return
        conn.held = [*events, *(conn.held or [])]
        self.unfence(conn)

    def rehome(self, conn: Conn, cause: str) -> None:
        """Hand a WebSocket to a new owner: same socket, the app from websocket.connect again.

        From here client events are held; the envelope goes out in a task of its own, so the
        envelopes of a batch of REHOMEs share round trips.
        """
        gateway = self.gateway
        assert gateway.relay is not None
        if cause == "dead":
            if conn.held is None and conn.unanswered:
                # Relayed to the dead worker after its last message for this connection:
                # possibly never handled.
                METRICS.messages_dropped.labels("rehome_dead").inc(conn.unanswered)
            conn.unanswered = 0
        old = conn.owner
        conn.owner = None
        if conn.held is None:
            conn.held = []
        if cause == "drain" and old is not None:
            # Events sent to the old owner after it let go come back with its RETURN.
            conn.fence = old
            self.fence(old, conn.id)
        conn.rehomed += 1
        conn.rehoming = True
        conn.resent = False  # a new envelope: it may be sent again once too
        conn.handover_at = time.monotonic()
        METRICS.rehomes.labels(cause).inc()
        logger.debug("%s: re-homing (%s, time %d)", conn.id, cause, conn.rehomed)
        # The client is connected and content to wait: twice a new connection's deadline
        # before giving up (a rolling update's new worker may still be starting).
        deadline = REHOME_CLAIM_FACTOR * gateway.settings.claim_timeout
        envelope = wire.connect_envelope(
            gateway.relay.channel, conn.id, conn.scope, deadline, rehomed=conn.rehomed,
        )
        conn.sent_at = time.monotonic()
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = asyncio.get_running_loop().call_later(deadline, gateway._claim_expired, conn)
        gateway._spawn(self._send(conn, envelope))

    async def _send(self, conn: Conn, envelope: dict[str, Any]) -> None:
        if not await self.gateway._enqueue(conn, envelope, "cannot re-home"):
            conn.told = True
            await self.gateway._end(conn, 1013, tell_owner=False)

    def fence(self, worker: str, conn_id: str) -> None:
        """Tell ``worker`` that nothing more of ``conn_id`` comes to it: RETURN what it holds."""
        assert self.gateway.relay is not None
        self.gateway.relay.post(worker, [wire.FENCE, conn_id, None], control=True)

    def unfence(self, conn: Conn) -> None:
        """Stop waiting for the old owner's RETURN; the held events go to the new owner."""
        conn.fence = None
        self.gateway._flush_held(conn)
