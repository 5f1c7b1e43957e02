"""Acknowledging client frames: which ones an app has handled, so the interface keeps no more.

The twin of ``interface/replay.py``. For a WebSocket whose connect envelope asked for it
(``"ack": true``), the host counts the client frames its app has *taken* (``receive()``
returned one) and *handled* (the app called ``receive()`` again: Channels dispatches one event
at a time, so the previous one is done and its output posted). Those counts go to the interface
as one ACK item appended to the next batch that goes there anyway (the relay's trailer), after
the output of the frames they cover: no round trip of their own on the hot path. A socket
whose app sends nothing back (and an interface that nothing else is sent to) still gets its
ACK: at most ``delay`` later, one ACK item on its own.

    acks = Acks(relay, delay=0.25)
    acks.mark(conn)                       # conn.handled or conn.taken changed
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..relay import wire
from ..relay.relay import Relay
from .owned import OwnedConn


class Acks:
    """The ACKs one host owes its interfaces; appended to the relay's batches."""

    def __init__(self, relay: Relay, delay: float) -> None:
        self.relay = relay
        self.delay = delay  # longest an ACK waits for a batch to ride on
        self._owed: dict[str, dict[str, OwnedConn]] = {}  # interface -> connections to ack
        self._timer: asyncio.TimerHandle | None = None
        relay.set_trailer(self.trailer)

    def mark(self, conn: OwnedConn) -> None:
        """``conn``'s counts changed: acknowledge them with the next batch to its interface."""
        owed = self._owed.get(conn.iface)
        if owed is None:
            owed = self._owed[conn.iface] = {}
        owed[conn.id] = conn
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._unsent)

    def trailer(self, iface: str) -> list[Any] | None:
        """The ACK item for a batch about to go to ``iface``, or None if nothing is owed."""
        owed = self._owed.pop(iface, None)
        if not owed:
            return None
        return [wire.ACK, "", [[c.id, c.handled, c.taken] for c in owed.values()]]

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _unsent(self) -> None:
        """ACKs no batch took within ``delay`` (quiet sockets): send them on their own."""
        self._timer = None
        for iface in list(self._owed):
            item = self.trailer(iface)
            if item is not None:
                self.relay.post(iface, item, control=True)
