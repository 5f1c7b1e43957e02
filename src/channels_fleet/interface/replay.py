"""Client frames a WebSocket's owner has not acknowledged, kept to be replayed if it dies.

The interface numbers the client frames it relays to a connection's owner (0, 1, ... from each
claim) and keeps them, in order, in the connection's :class:`Unacked` until the owner's
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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..relay import wire

#: A client event as the server gave it (asgiref.typing's receive events) or as an old owner
#: returned it: relayed as it is.
ClientEvent = Mapping[str, Any]

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


def frame_size(event: ClientEvent) -> int:
    """A frame's payload length (characters of a text frame, bytes of a binary one or of a
    channel message's body)."""
    return len(event.get("text") or event.get("bytes") or event.get("body") or "")


class Unacked:
    """The client frames relayed to one connection's current owner and not yet acknowledged
    (numbered from its claim); bounded, the oldest dropped first (replay.py says why)."""

    __slots__ = ("frames", "first", "acked", "taken", "size", "limit", "max_bytes")

    def __init__(self, limit: int, max_bytes: int) -> None:
        self.frames: list[ClientEvent] = []  # oldest first
        self.first = 0  # the number of frames[0] (frames are numbered from the claim)
        self.acked = 0  # frames the owner acknowledged as handled
        self.taken = 0  # frames the owner's app had taken, as last acknowledged
        self.size = 0  # payload bytes kept
        self.limit = limit
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def lost(self) -> int:
        """Unacknowledged frames dropped because the buffer was full (0: a replay is whole)."""
        return max(0, self.first - self.acked)

    def record(self, event: ClientEvent) -> None:
        """One more frame relayed to the owner; the oldest go if the buffer is over a bound."""
        frames = self.frames
        frames.append(event)
        self.size += frame_size(event)
        while frames and (len(frames) > self.limit or self.size > self.max_bytes):
            self.size -= frame_size(frames.pop(0))
            self.first += 1

    def ack(self, handled: int, taken: int) -> None:
        """The owner's ACK: its app has handled the first ``handled`` frames, taken ``taken``."""
        if taken > self.taken:
            self.taken = taken
        if handled <= self.acked:
            return
        self.acked = handled
        frames = self.frames
        done = min(handled - self.first, len(frames))
        if done > 0:
            size = self.size
            for event in frames[:done]:  # frame_size, inlined: once per acknowledged frame
                size -= len(event.get("text") or event.get("bytes") or event.get("body") or "")
            self.size = size
            del frames[:done]
            self.first += done

    def detach(self, cause: str) -> Replay:
        """What the next owner is to get first (the owner is gone); start afresh for it."""
        frames = [{**event, REPLAYED: True} for event in self.frames]
        duplicates = max(0, min(self.taken, self.first + len(frames)) - self.first)
        replay = Replay(frames, self.lost, duplicates, cause, max(0, self.taken - self.acked))
        self.frames = []
        self.first = self.acked = self.taken = self.size = 0
        return replay
