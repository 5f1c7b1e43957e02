"""Re-homing on the worker side: a draining worker gives its WebSockets back, losing no event.

The twin of ``interface/rehome.py``. Events that arrive once a hand-back has begun are stashed
rather than given to the app; once the app has handled what it already took, the worker sends
REHOME and the app gets its disconnect (1012). The interface answers with a FENCE (nothing more
will come), and the stash goes back with RETURN, in order, to be replayed to the socket's new
owner.

    handback = HandBack(side, settings, acks)
    await handback.give(conn)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.side import RelaySide
from .acks import Acks
from .owned import HANDED, HANDING_BACK, RUNNING, OwnedConn
from .settings import WorkerSettings

logger = logging.getLogger(__name__)

#: Longest a hand-back waits for the app to finish the events it took (a busy handler on a
#: loaded machine); past it the socket is handed back anyway, that event's output is dropped,
#: and the interface replays the event to the new owner (its ACK said taken, not handled).
HAND_BACK_WAIT = 3.0


class HandBack:
    """Gives a host's WebSockets back to their interfaces; one per host."""

    def __init__(self, side: RelaySide, settings: WorkerSettings, acks: Acks) -> None:
        self.side = side
        self.settings = settings
        self.acks = acks
        # Connections given back, until the interface's FENCE: events that still arrive for
        # them are returned, not lost.
        self.handed: dict[str, OwnedConn] = {}

    async def give(self, conn: OwnedConn) -> None:
        """Give one WebSocket back once its app is idle (at most HAND_BACK_WAIT)."""
        if conn.state is not RUNNING:
            return  # ended (or abandoned) while earlier batches were handed back
        conn.move(HANDING_BACK)
        if not (conn.waiting and conn.queue.empty()):
            conn.idle = asyncio.Event()
            try:
                await asyncio.wait_for(conn.idle.wait(), HAND_BACK_WAIT)
            except TimeoutError:
                logger.warning("%s: app still busy after %.0f s; handing it back anyway",
                               conn.id, HAND_BACK_WAIT)
        if conn.gone or conn.state is not HANDING_BACK:
            return  # the client, the app or the interface's death ended it meanwhile
        # Relayed before the hand-back began, never seen by the app: first in the stash.
        conn.stash[:0] = conn.take_queued()
        conn.move(HANDED)
        self.handed[conn.id] = conn
        # What the app handled is acknowledged first: only the stash stands unacknowledged
        # should the interface replay in place of a RETURN that never comes.
        ack = self.acks.trailer(conn.iface)
        if ack is not None:
            self.side.relay.post(conn.iface, ack, control=True)
        self.side.relay.post(conn.iface, [wire.REHOME, conn.id, "drain"], control=True)
        conn.hand_disconnect(conn.disconnect_event(1012), self.settings.app_close_timeout)

    def stash(self, conn: OwnedConn, event: dict[str, Any]) -> None:
        """Keep an event for the new owner (bounded like the app's inbound queue)."""
        if len(conn.stash) >= self.settings.inbound_limit:
            METRICS.messages_dropped.labels("buffer_full").inc()
            return
        conn.stash.append(event)

    async def on_fence(self, conn_id: str, _: None, sender: str) -> None:
        """The interface's FENCE: nothing more comes for the connection; RETURN the stash."""
        conn = self.handed.pop(conn_id, None)
        if conn is None:
            return
        self.side.relay.post(conn.iface, [wire.RETURN, conn.id, conn.stash], control=True)
        conn.stash = []

    def forget(self, dead: set[str]) -> None:
        """The interfaces in ``dead`` will send no FENCE: stop waiting for them."""
        for conn in list(self.handed.values()):
            if conn.iface in dead:
                del self.handed[conn.id]
