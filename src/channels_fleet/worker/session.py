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
from .settings import WorkerSettings

logger = logging.getLogger(__name__)

#: Set on an event the relay's ACK counts must skip: a frame or channel message relayed under
#: another claim than the instance's current one (an alias, or queued before a resume); the
#: current interface never recorded it in its Unacked. Never reaches the app.
UNCOUNTED = "fleet_uncounted"


class HeldSession:
    """One resumable session's state on the worker that runs its app instance."""

    __slots__ = ("id", "outbox", "ack", "home", "home_claim", "aliases", "socket", "ended",
                 "window", "write")

    def __init__(self, mark: SessionMark, home: str, claim: str,
                 settings: WorkerSettings) -> None:
        self.id = mark["id"]
        # Frames up to the mark were numbered by an earlier owner (a re-home) and are not
        # here: counted as acknowledged, so no resume can ask for them and none is "lost".
        self.outbox = Outbox(settings.resume_frames, settings.resume_bytes, seq=mark["seq"],
                             acked=mark["seq"])
        self.ack = mark["ack"]  # the highest client fleet_seq the app has taken
        self.home = home  # the interface whose LIST holds the homed channel (inbox.py)
        self.home_claim = claim  # the claim the home knows it by (SESSION_END names it)
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
                if key != FLEET_SEQ and key != UNCOUNTED}

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
