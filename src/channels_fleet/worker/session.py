"""A resumable session, held by the app instance that serves it (docs/resume-protocol.md).

An app instance whose connect envelope carries ``"session"`` holds one :class:`HeldSession`:
what a resume needs lives here, on the worker, since the socket's interface may be gone by
then. Per direction:

- server frames: every ``websocket.send`` of the app is numbered into the ``outbox``
  (resume.buffers.Outbox, bounded) and relayed with ``"fleet_seq"``; the client's acks
  (CLIENT_ACK items) trim it; a resume replays what is past the client's ``last``;
- client frames: ``ack`` is the highest ``fleet_seq`` the app has taken; a frame at or below it
  is a duplicate (the client resends past RESUMED's ack) and never reaches the app.

While the instance is DETACHED (owned.py) its sends go to the outbox only, and the ``window``
timer runs. The moves themselves (detach, resume, end) and the registry are keeper.py's.

    session = HeldSession(mark, home=iface, claim=claim, settings=settings)
    out = session.number(message)     # the message to relay (with fleet_seq), None if detached
    event = session.take(event)       # None: a duplicate, dropped
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..relay.session_items import FLEET_SEQ, SessionMark
from ..resume.buffers import Outbox
from .acks import Acks
from .settings import WorkerSettings

logger = logging.getLogger(__name__)

#: Set on an event the relay's ACK counts must skip: a frame or channel message relayed under
#: another claim than the instance's current one (an alias, or queued before a resume); the
#: current interface never recorded it in its Unacked. Its value is that claim: what came under
#: the home claim is counted for the home (HomeCounts). Never reaches the app.
UNCOUNTED = "fleet_uncounted"
#: Set beside UNCOUNTED on a channel message that came under an alias: who forwarded it (the
#: home, or the worker adopting the dead home's LIST), the one its ACKs go to (HomeCounts).
FORWARDER = "fleet_forwarder"


class HomeCounts:
    """The ACK counts (acks.Counted) of what the home forwards under the home claim: its
    DETACHED connection keeps those messages (Unacked) until they are handled, for the next
    owner should this one die. Once the home is dead the worker adopting its LIST forwards
    them and keeps them likewise (forwards.py): ``forwarder`` is whoever forwarded last,
    counted from 0 for each.

    They go to ``iface``, the socket's interface, with the output of what they count, which
    passes them on to the forwarder: sent straight there they could tell it of a message
    handled whose output never left a worker killed meanwhile, and that message would be
    lost; or, later than the output, replay a message whose output the client had."""

    __slots__ = ("id", "forwarder", "iface", "taken", "handled")

    def __init__(self, claim: str, forwarder: str, iface: str) -> None:
        self.id, self.forwarder, self.iface = claim, forwarder, iface
        self.taken = self.handled = 0

    def ack_entry(self) -> list[Any]:
        return [self.id, self.handled, self.taken, self.forwarder]


class HeldSession:
    """One resumable session's state on the worker that runs its app instance."""

    __slots__ = ("id", "outbox", "ack", "home", "home_claim", "home_counts", "aliases", "socket",
                 "ended", "window", "write")

    def __init__(self, mark: SessionMark, home: str, claim: str,
                 settings: WorkerSettings) -> None:
        self.id = mark["id"]
        # Frames up to the mark were numbered by an earlier owner (a re-home) and are not
        # here: counted as acknowledged, so no resume can ask for them and none is "lost".
        self.outbox = Outbox(settings.resume_frames, settings.resume_bytes, seq=mark["seq"],
                             acked=mark["seq"])
        self.ack = mark["ack"]  # the highest client fleet_seq the app has taken
        # The interface whose LIST holds the homed channel (inbox.py), and the claim it knows
        # the session by (SESSION_END names it): the envelope's, or kept from an earlier owner
        # when the socket was resumed away from its home and then re-homed.
        self.home = mark.get("home") or home
        self.home_claim = mark.get("home_claim") or claim
        self.home_counts = HomeCounts(self.home_claim, self.home, home)
        self.aliases: set[str] = set()  # earlier claims it was reached by (routed here)
        self.socket = True  # a socket serves it (False from detach to resume, and at its end)
        self.ended: str | None = None  # why it ended (metrics.SESSION_END_REASONS, or
        # "moved": to another worker); None while it lives
        self.window: asyncio.TimerHandle | None = None  # ends it, while detached
        self.write: asyncio.Task[None] | None = None  # the last registry write (in order)

    def __repr__(self) -> str:
        return f"<HeldSession {self.id} seq={self.outbox.seq} ack={self.ack} {self.ended or ''}>"

    def number(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Number an app's ``websocket.send`` and keep its payload for a replay; return the
        message to relay (a copy with ``fleet_seq``: the app's own dict is left alone), or
        None while no socket serves the session."""
        text = message.get("text")
        seq = self.outbox.add(text if text is not None else message.get("bytes") or b"")
        if not self.socket:
            return None
        out = dict(message)
        out[FLEET_SEQ] = seq
        return out

    @property
    def overflowed(self) -> bool:
        """The outbox dropped a frame the client never acknowledged: no resume can have it."""
        return self.outbox.lost > self.outbox.acked

    def take(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """A ``websocket.receive`` the app takes: None if a duplicate (at or below ``ack``),
        else the event as the app sees it (no ``fleet_seq``, no marks of ours)."""
        seq = event.get(FLEET_SEQ)
        if seq is not None:
            if seq.__class__ is not int:
                logger.warning("session %s: dropped a client frame numbered %r", self.id, seq)
                return None
            if seq <= self.ack:
                return None
            self.ack = seq
        elif UNCOUNTED not in event:
            return event
        return {key: value for key, value in event.items()
                if key != FLEET_SEQ and key != UNCOUNTED and key != FORWARDER}

    def took_home(self, acks: Acks, forwarder: str | None, iface: str) -> None:
        """The app took an event ``forwarder`` (the home, or its adopter) sent under the home
        claim; a new forwarder numbers from 0. ``iface``: where the socket's output goes."""
        counts = self.home_counts
        if forwarder and forwarder != counts.forwarder:
            counts = self.home_counts = HomeCounts(self.home_claim, forwarder, iface)
        counts.taken += 1
        counts.iface = iface
        acks.mark(counts)

    def handled_home(self, acks: Acks, iface: str) -> None:
        """The app asks for more: what it took of the home's is handled."""
        counts = self.home_counts
        if counts.handled != counts.taken:
            counts.handled = counts.taken
            counts.iface = iface
            acks.mark(counts)

    def returnable(self, stash: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What a given-back instance RETURNs through its interface, which records it as the
        socket's own: the home's messages left out (its Unacked replays them to the next
        owner), the others unmarked (the next owner counts them for that interface)."""
        kept = []
        for event in stash:
            claim = event.get(UNCOUNTED)
            if claim is None:
                kept.append(event)
            elif claim != self.home_claim:
                kept.append({key: value for key, value in event.items()
                             if key != UNCOUNTED and key != FORWARDER})
        return kept

    def replay(self, last: int) -> list[dict[str, Any]]:
        """The kept frames past ``last`` (the client's), as the SENDs that carry them again."""
        frames = []
        for seq, payload in self.outbox.unacked(last):
            key = "text" if isinstance(payload, str) else "bytes"
            frames.append({"type": "websocket.send", key: payload, FLEET_SEQ: seq})
        return frames

    def cancel_window(self) -> None:
        if self.window is not None:
            self.window.cancel()
            self.window = None
