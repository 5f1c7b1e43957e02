"""Re-homing on the worker side: a draining worker gives its WebSockets back, losing no event.

The twin of ``interface/rehome.py``. Events that arrive once a hand-back has begun are stashed
rather than given to the app; once the app has handled what it already took, the worker sends
REHOME and the app gets its disconnect (1012). The interface answers with a FENCE (nothing more
will come), and the stash goes back with RETURN, in order, to be replayed to the socket's new
owner.

    handback = HandBack(side, acks, instances)
    await handback.give(instance)
"""

from __future__ import annotations

import logging

from ..relay import wire
from ..relay.side import RelaySide
from .acks import Acks
from .instance import AppInstance
from .instances import AppInstances
from .owned import HANDING_BACK, RUNNING

logger = logging.getLogger(__name__)

#: Longest a hand-back waits for the app to finish the events it took (a busy handler on a
#: loaded machine); past it the socket is handed back anyway, that event's output is dropped,
#: and the interface replays the event to the new owner (its ACK said taken, not handled).
HAND_BACK_WAIT = 3.0


class HandBack:
    """Gives a host's WebSockets back to their interfaces; one per host."""

    def __init__(self, side: RelaySide, acks: Acks, instances: AppInstances) -> None:
        self.side = side
        self.acks = acks
        # Given back, until the interface's FENCE: events that still arrive for them are
        # returned, not lost (``instances.handed``).
        self.instances = instances

    async def give(self, instance: AppInstance) -> None:
        """Give one WebSocket back once its app is idle (at most HAND_BACK_WAIT)."""
        if instance.state is not RUNNING:
            return  # ended (or abandoned) while earlier batches were handed back
        instance.begin_hand_back()
        if not await instance.until_idle(HAND_BACK_WAIT):
            logger.warning("%s: app still busy after %.0f s; handing it back anyway",
                           instance.id, HAND_BACK_WAIT)
        if instance.gone or instance.state is not HANDING_BACK:
            return  # the client, the app or the interface's death ended it meanwhile
        instance.hand_back()
        if instance.session is not None:
            instance.stash = instance.session.returnable(instance.stash)
        self.instances.handed[instance.id] = instance
        # Only the stash stands unacknowledged should the interface replay in place of a
        # RETURN that never comes.
        self.acknowledge(instance)
        self.side.relay.post(instance.iface, [wire.REHOME, instance.id, "drain"], control=True)
        instance.move_away(1012)

    def acknowledge(self, instance: AppInstance) -> None:
        """Post now the ACKs owed to ``instance``'s interface (and its session's home), ahead
        of the REHOME that follows: what the app handled is not replayed to the next owner."""
        ack = self.acks.trailer(instance.iface)
        if ack is not None:
            self.side.relay.post(instance.iface, ack, control=True)
        home = instance.session.home if instance.session is not None else instance.iface
        ack = self.acks.trailer(home) if home != instance.iface else None
        if ack is not None:  # the home's Unacked replays only what is not handled
            self.side.relay.post(home, ack, control=True)

    @property
    def handing_back(self) -> bool:
        """Some given back still wait for their interface's FENCE."""
        return bool(self.instances.handed)

    async def on_fence(self, conn_id: str, _: None, sender: str) -> None:
        """The interface's FENCE: nothing more comes for the connection; RETURN the stash."""
        instance = self.instances.handed.pop(conn_id, None)
        if instance is None:
            return
        self.side.relay.post(instance.iface, [wire.RETURN, instance.id, instance.stash],
                             control=True)
        instance.stash = []

    def forget(self, dead: set[str]) -> None:
        """The interfaces in ``dead`` will send no FENCE: stop waiting for them."""
        handed = self.instances.handed
        for instance in list(handed.values()):
            if instance.iface in dead:
                del handed[instance.id]
