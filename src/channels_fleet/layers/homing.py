"""A consumer channel homed on the interface: the same name on every worker its socket moves to.

In a worker, a WebSocket's consumer gets from ``new_channel()`` the name the interface holding
the socket chose for it (``specific.<interface token>!<connection id>``), not a name of the
worker's own. Its messages land in the interface's LIST, which the interface pops and relays
with the client's frames, in order, through the relay (interface/inbox.py). So a re-homed
socket's consumer keeps its channel name and its group memberships, and what was sent to it
while the socket moved waits at the interface for the next app instance (or is replayed to it
after a crash), as client frames do.

The app receives those messages through its ASGI ``receive()``: a Channels consumer dispatches
both of its sources (``receive`` and ``channel_receive``) with the same ``dispatch``, one message
at a time, so it sees what it always saw. A receive on the layer for such a name waits for
ever; the app instance hands the messages over instead (worker/instance.py).

    homed = HomedChannel(name, accept=lambda layer: layer_shares_the_relays_redis(layer))
    HOMED.set(homed)                         # in the app instance's task, before the app runs
    name = await layer.new_channel()         # in the consumer: the homed name, once
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

#: Not a LIST key: what ``receive_key`` returns for a homed name (nothing to pop here).
HOMED_KEY = ""


class HomedChannel:
    """The homed channel name of one app instance (worker side), handed out once."""

    __slots__ = ("name", "accept", "layer", "moving", "groups")

    def __init__(self, name: str, accept: Callable[[Any], bool]) -> None:
        self.name = name
        #: ``accept(layer)``: whether this layer's messages can be homed (same Redis as the
        #: interface's relay); called by the first ``new_channel()`` of the instance.
        self.accept = accept
        self.layer: Any = None  # the layer whose new_channel() returned the name
        #: The socket is moving to another worker: the old instance's ``group_discard`` of
        #: the name is skipped, so the groups keep it for the next instance.
        self.moving = False
        #: The groups this instance put the name in (and did not leave before moving): the
        #: interface leaves them when the socket ends for good, whatever the app did.
        self.groups: set[str] = set()

    def take(self, layer: Any) -> bool:
        """Give the name to ``layer``'s ``new_channel()``; once per instance."""
        if self.layer is not None or not self.accept(layer):
            return False
        self.layer = layer
        return True


#: The homed channel of the app instance running in this context (worker processes).
HOMED: ContextVar[HomedChannel | None] = ContextVar("channels_fleet_homed", default=None)


def homed(channel: str) -> HomedChannel | None:
    """This context's homed channel if it is ``channel`` and was handed out, else None."""
    current = HOMED.get()
    if current is not None and current.layer is not None and current.name == channel:
        return current
    return None
