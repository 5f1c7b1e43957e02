"""Client frames a WebSocket's owner has not acknowledged, kept to be replayed if it dies.

The interface numbers the client frames it relays to a connection's owner (0, 1, ... from each
claim) and keeps them, in order, in the connection's ``Unacked`` (client.py) until the owner's
ACK says its app has handled them (``Acks``, worker/instance.py; the ACK rides after the app's
output in the batches the owner sends anyway). When the owner dies, what it had not
acknowledged becomes a :class:`Replay`: delivered to the next owner after its
``websocket.connect``, before any new frame, each event marked ``"fleet_replayed": True``.
A frame the dead app had taken may have been handled in part (or wholly, its ACK lost with the
worker): it may be seen twice, and is counted as such.

The buffer is bounded (``CHANNELS_FLEET_REPLAY_LIMIT`` frames, ``CHANNELS_FLEET_REPLAY_BYTES``):
beyond, the oldest frame is dropped, and until an ACK covers it again the socket cannot be
replayed: were its owner to die then, the socket is closed with 1012 instead of re-homed.

    unacked = Unacked(limit=500, max_bytes=512 * 1024)
    unacked.record(event)                 # relayed to the owner
    unacked.ack(handled=1, taken=1)       # the owner's ACK
    replay = unacked.detach("dead")       # the owner died: what the next one gets first

    side.handle({wire.ACK: conns.on_ack})   # the owners' ACK items, applied (Connections)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..relay import wire

#: The key marking a replayed event for the app (``message.get("fleet_replayed")``).
REPLAYED = wire.REPLAYED


@dataclass(frozen=True)
class Replay:
    """What a dead (or silent) owner had not acknowledged, for the connection's next owner."""

    #: The frames, oldest first, each marked ``"fleet_replayed": True``.
    frames: list[dict[str, Any]]
    #: Unacknowledged frames the full buffer had dropped: > 0, the replay would have a hole.
    lost: int
    #: Of ``frames``, those the old owner's app had taken: each may be seen twice.
    duplicates: int
    #: Why the owner changed: "dead", or "drain" when the drained owner never returned its
    #: events.
    cause: str
    #: Frames the old owner's app had taken and not handled (kept here or dropped): what a
    #: drained owner's RETURN leaves out.
    unhandled: int = 0

    def unfinished(self) -> Replay | None:
        """The part a drained owner's exact RETURN does not hold: the frames its app took and
        had not finished when it let go (busy past the worker's hand-back wait), whose output
        went with the old app instance; None if there are none. Seen twice, possibly."""
        if not self.unhandled:
            return None
        kept = self.frames[:self.duplicates]
        return Replay(kept, self.unhandled - len(kept), len(kept), self.cause, self.unhandled)
