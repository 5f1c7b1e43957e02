"""One resumable session's sequence state, per direction: ``Outbox`` (frames sent and not yet
acknowledged, kept to replay) and ``Inbox`` (frames received, in order, and when to ack).

Pure state, no I/O and no clock of its own (callers pass ``now``), so the interface and the
Python client drive the same objects and tests need no event loop.

    out = Outbox(max_frames=1000, max_bytes=1 << 20)
    seq = out.add("hello")            # 1: send encode_data(seq, inbox.ack(), "hello")
    out.ack(1)                        # the peer has it: dropped
    inbox = Inbox()
    if inbox.accept(seq=1, now=loop.time()):   # new, in order: deliver it
        ...
    if inbox.ack_due(loop.time()):
        send(encode_ack(inbox.ack()))
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .envelope import ACK_AFTER_S, ACK_EVERY, Payload, ProtocolError, payload_size


@dataclass(slots=True)
class Outbox:
    """Frames of one direction not yet acknowledged by the peer, bounded.

    Beyond ``max_frames`` frames or ``max_bytes`` payload bytes the oldest go and ``lost``
    remembers the highest one dropped: the session stays resumable as long as the peer has
    acknowledged past it (:meth:`can_replay`), which it usually has by the time it matters.
    """

    max_frames: int
    max_bytes: int
    seq: int = 0  # the last sequence number given out
    acked: int = 0  # the highest the peer acknowledged
    lost: int = 0  # the highest dropped at the bound before the peer acknowledged it
    size: int = 0  # payload bytes kept
    _frames: deque[tuple[int, Payload, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.max_frames < 1 or self.max_bytes < 1:
            raise ValueError(f"Outbox needs max_frames >= 1 and max_bytes >= 1; got "
                             f"{self.max_frames}, {self.max_bytes}")

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, payload: Payload) -> int:
        """Keep ``payload`` as the next frame; return its sequence number."""
        self.seq += 1
        size = payload_size(payload)
        self._frames.append((self.seq, payload, size))
        self.size += size
        while self._frames and (len(self._frames) > self.max_frames or self.size > self.max_bytes):
            seq, _, size = self._frames.popleft()
            self.size -= size
            self.lost = seq
        return self.seq

    def ack(self, ack: int) -> None:
        """The peer has every frame up to ``ack``: drop them. An older ack is stale and ignored;
        one past the last frame sent is a protocol error."""
        if ack > self.seq:
            raise ProtocolError(f"ack {ack} of frames never sent (the last sent is {self.seq})")
        if ack <= self.acked:
            return
        self.acked = ack
        while self._frames and self._frames[0][0] <= ack:
            self.size -= self._frames.popleft()[2]

    def can_replay(self, after: int) -> bool:
        """Whether every frame past ``after`` (the peer's ack on resuming) is still here."""
        return max(self.acked, self.lost) <= after <= self.seq

    def unacked(self, after: int = 0) -> list[tuple[int, Payload]]:
        """The frames kept past ``after``, in order, to (re)send."""
        return [(seq, payload) for seq, payload, _ in self._frames if seq > after]

    def reset(self) -> int:
        """Start a new session's numbering; return how many unacknowledged frames went."""
        dropped = self.seq - self.acked
        self._frames.clear()
        self.seq = self.acked = self.lost = self.size = 0
        return dropped


@dataclass(slots=True)
class Inbox:
    """Frames of one direction received: in order, duplicates dropped, acks timed."""

    received: int = 0  # the highest sequence number received in order
    acked: int = 0  # the highest acknowledged to the peer
    since: float | None = None  # when the oldest unacknowledged frame arrived

    def accept(self, seq: int, now: float) -> bool:
        """True: frame ``seq`` is the next one, deliver it. False: a duplicate (a replay of what
        arrived already), drop it. A frame that skips is a protocol error."""
        if seq <= self.received:
            return False
        if seq != self.received + 1:
            raise ProtocolError(f"frame {seq} after frame {self.received}: "
                                f"{seq - self.received - 1} missing")
        self.received = seq
        if self.since is None:
            self.since = now
        return True

    def ack(self) -> int:
        """The ack to put in the next message: every D and A carries it (it counts as sent)."""
        self.acked = self.received
        self.since = None
        return self.received

    def ack_due(self, now: float) -> bool:
        """Whether an A must go now: ACK_EVERY frames, or one ACK_AFTER_S old, unacknowledged."""
        pending = self.received - self.acked
        return pending >= ACK_EVERY or (
            pending > 0 and self.since is not None and now - self.since >= ACK_AFTER_S)

    def ack_at(self) -> float | None:
        """When the oldest unacknowledged frame's ack falls due (None: nothing to ack)."""
        return None if self.since is None else self.since + ACK_AFTER_S

    def reset(self) -> None:
        self.received = self.acked = 0
        self.since = None
