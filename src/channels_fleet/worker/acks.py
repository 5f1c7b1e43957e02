"""The ACKs a worker owes its interfaces: how far each app has got in its socket's frames.

ACKs (the twin of ``interface/replay.py``): for a WebSocket whose connect envelope asked for
them (``"ack": true``), the instance counts the client frames and channel messages its app has
*taken* (``receive()`` returned one) and *handled* (the app called ``receive()`` again: Channels
dispatches one event at a time, so the previous one is done and its output posted). Those counts
go to the interface as one ACK item appended to the next batch that goes there anyway (the
relay's trailer), after the output of the frames they cover. A socket whose app sends nothing
back still gets its ACK: at most ``delay`` later, one ACK item on its own.

    acks = Acks(relay, delay=0.5)
    acks.mark(instance)     # its counts changed (worker/instance.py)
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ..relay import wire
from ..relay.relay import Relay


class Counted(Protocol):
    """What an ACK reports of one app instance (worker/instance.py's AppInstance)."""

    id: str
    iface: str
    taken: int
    handled: int

    def ack_entry(self) -> list[Any]:
        """``[id, handled, taken]`` (and whom the counts are for, if not ``iface``)."""


class Acks:
    """The ACKs one host owes its interfaces; appended to the relay's batches."""

    def __init__(self, relay: Relay, delay: float) -> None:
        self.relay = relay
        self.delay = delay  # longest an ACK waits for a batch to ride on
        self._owed: dict[str, dict[str, Counted]] = {}  # interface -> instances to ack
        self._timer: asyncio.TimerHandle | None = None
        relay.set_trailer(self.trailer)

    def mark(self, instance: Counted) -> None:
        """Its counts changed: acknowledge them with the next batch to its interface."""
        owed = self._owed.get(instance.iface)
        if owed is None:
            owed = self._owed[instance.iface] = {}
        owed[instance.id] = instance
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._unsent)

    def trailer(self, iface: str) -> list[Any] | None:
        """The ACK item for a batch about to go to ``iface``, or None if nothing is owed."""
        owed = self._owed.pop(iface, None)
        if not owed:
            return None
        return [wire.ACK, "", [i.ack_entry() for i in owed.values()]]

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
