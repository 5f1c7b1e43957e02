"""Re-homing on the worker side: a draining worker gives its WebSockets back, losing no event.

The twin of ``rehome.py``. Events that arrive once a hand-back has begun are stashed rather than
given to the app; once the app has handled what it already took, the worker sends REHOME and the
app gets its disconnect (1012). The interface answers with a FENCE (nothing more will come),
and the stash goes back with RETURN, in order, to be replayed to the socket's new owner.

    handback = HandBack(host)
    await handback.give(conn)
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..observability.metrics import METRICS
from ..relay import wire

if TYPE_CHECKING:
    from .host import Host, WConn

logger = logging.getLogger(__name__)

#: Longest a hand-back waits for the app to finish the events it took (a busy handler on a
#: loaded machine); past it the socket is handed back anyway and that event's output is lost.
HAND_BACK_WAIT = 3.0


class HandBack:
    """Gives the host's WebSockets back to their interfaces; one per host."""

    def __init__(self, host: Host) -> None:
        self.host = host
        # Connections given back, until the interface's FENCE: events that still arrive for
        # them are returned, not lost.
        self.handed: dict[str, WConn] = {}

    async def give(self, conn: WConn) -> None:
        """Give one WebSocket back once its app is idle (at most HAND_BACK_WAIT)."""
        relay = self.host.relay
        assert relay is not None
        conn.handing = True
        if not (conn.waiting and conn.queue.empty()):
            conn.idle = asyncio.Event()
            try:
                await asyncio.wait_for(conn.idle.wait(), HAND_BACK_WAIT)
            except TimeoutError:
                logger.warning("%s: app still busy after %.0f s; handing it back anyway",
                               conn.id, HAND_BACK_WAIT)
        if conn.gone or conn.closed or conn.abandoned:
            return  # the client or the app ended it meanwhile
        leftover = []  # relayed before the hand-back began, never seen by the app
        while not conn.queue.empty():
            leftover.append(conn.queue.get_nowait())
        conn.stash[:0] = leftover
        conn.abandoned = True
        self.handed[conn.id] = conn
        relay.post(conn.iface, [wire.REHOME, conn.id, "drain"], control=True)
        self.host._deliver_gone(conn, self.host._disconnect(conn, 1012))

    def stash(self, conn: WConn, event: dict[str, Any]) -> None:
        """Keep an event for the new owner (bounded like the app's inbound queue)."""
        if len(conn.stash) >= self.host.settings.inbound_limit:
            METRICS.messages_dropped.labels("buffer_full").inc()
            return
        conn.stash.append(event)

    def on_item(self, conn: WConn, kind: str, item: list[Any]) -> None:
        """A relay item for a connection given back: stash it, or RETURN the stash on FENCE."""
        relay = self.host.relay
        assert relay is not None
        if kind == wire.EVENT:
            if item[2]["type"] != "websocket.disconnect":
                self.stash(conn, item[2])
        elif kind == wire.FENCE:
            del self.handed[conn.id]
            relay.post(conn.iface, [wire.RETURN, conn.id, conn.stash], control=True)
            conn.stash = []

    def forget(self, dead: set[str]) -> None:
        """The interfaces in ``dead`` will send no FENCE: stop waiting for them."""
        for conn in list(self.handed.values()):
            if conn.iface in dead:
                del self.handed[conn.id]
