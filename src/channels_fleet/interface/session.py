"""A resumable socket's session as its interface sees it (docs/resume-protocol.md): the token to
echo in the hello, where the numbering stands, and what the client is told it holds.

The worker numbers the server frames (each SEND carries ``fleet_seq``) and keeps everything a
resume needs; the interface only wraps and unwraps, and keeps:

- ``seq``: the last server frame it wrote (a re-homed socket's envelope continues from it);
- ``client_ack``: the highest client frame the owner's app has taken, from the relay's ACK
  counts (``taken`` frames of the current claim: :meth:`SocketSession.took` reads their seqs
  out of the connection's ``Unacked``); every ``D`` written carries it, and an ``A`` tells it
  when no ``D`` does (:meth:`SocketSession.ack_due`: ``ACK_EVERY`` frames behind at once, else
  after ``ACK_AFTER_S``);
- ``peer_ack``: the highest server frame the client acknowledged, relayed as CLIENT_ACK when it
  rises;
- ``back``: the interface drains and wrote ``B``: no ``D`` or ``A`` goes out after it (the
  owner's frames stay in its outbox for the client's resume elsewhere).

    session = SocketSession(session_id, token)
    envelope = connect_envelope(..., session=session.mark())
    frame = session.wrap(message)              # a SEND's websocket.send, as a D frame
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..relay.session_items import FLEET_SEQ, SessionMark, session_mark
from ..resume.envelope import ACK_EVERY, Hello, encode_data, encode_hello
from .replay import Unacked


class SocketSession:
    """The session of one resumable socket at its interface."""

    __slots__ = ("id", "token", "seq", "client_ack", "told", "peer_ack", "resuming", "back",
                 "timer", "home", "home_claim", "_claim", "_scanned")

    def __init__(self, session_id: str, token: str, *, seq: int = 0, resuming: bool = False,
                 ) -> None:
        self.id = session_id  # the registry's key (resume/token.py)
        self.token = token  # a bearer credential: echoed in the hello, never logged
        self.seq = seq  # the last server frame written (a resume: the client's ``last``)
        self.client_ack = 0  # the highest client frame the owner's app has taken
        self.told = 0  # ... as the client was last told it (a D's ack or an A)
        self.peer_ack = 0  # the highest server frame the client acknowledged
        self.resuming = resuming  # a RESUME is out, unanswered
        self.back = False  # B written (the interface drains): nothing but X after it
        self.timer: asyncio.TimerHandle | None = None  # an A due after ACK_AFTER_S
        # Resumed here from elsewhere: the interface whose LIST holds the consumer's homed
        # channel, and the claim its DETACHED connection forwards it under ("": here, none).
        self.home = ""
        self.home_claim = ""
        self._claim = ""  # the claim whose frames _scanned counts
        self._scanned = 0  # frames of that claim whose seqs client_ack has seen

    def __repr__(self) -> str:  # no token
        return f"<SocketSession {self.id[:8]} seq={self.seq} ack={self.client_ack}>"

    def mark(self) -> SessionMark:
        """The connect envelope's ``"session"``: the numbering continues from here, the home
        stays where it is."""
        return session_mark(self.id, self.seq, self.client_ack, self.home, self.home_claim)

    def hello(self, resumed: bool, protocol: str | None) -> str:
        """The ``H`` message: first on every connection of the session."""
        ack = self.client_ack if resumed else 0
        return encode_hello(Hello(self.token, resumed, ack, protocol))

    def resumed(self, ack: int, home: str, home_claim: str) -> None:
        """The owner took the session over (RESUMED): the app holds client frames up to ``ack``;
        the session's home is ``home``, which knows it as ``home_claim``."""
        self.resuming = False
        self.client_ack = self.told = ack
        self.home, self.home_claim = home, home_claim

    def wrap(self, message: dict[str, Any]) -> dict[str, Any]:
        """An app's ``websocket.send`` (numbered by the owner) as the ``D`` frame to write."""
        seq = message[FLEET_SEQ]
        text = message.get("text")
        self.seq, self.told = seq, self.client_ack
        if text is not None:
            return {"type": "websocket.send", "text": encode_data(seq, self.client_ack, text)}
        payload = encode_data(seq, self.client_ack, message.get("bytes") or b"")
        return {"type": "websocket.send", "bytes": payload}

    def peer_acked(self, ack: int) -> bool:
        """The client acknowledged server frames up to ``ack``: True if that is news."""
        if ack <= self.peer_ack:
            return False
        self.peer_ack = ack
        return True

    def took(self, claim: str, unacked: Unacked, taken: int) -> bool:
        """The owner's ACK: its app has taken the first ``taken`` frames relayed under
        ``claim`` (``unacked`` still holds those it has not handled). True if ``client_ack``
        rose. Channel messages among them carry no seq; frames already dropped were below a
        later one's seq, which counts for them."""
        if claim != self._claim:
            self._claim, self._scanned = claim, 0  # a new claim counts from 0
        frames, first = unacked.frames, unacked.first
        best = self.client_ack
        for index in range(max(self._scanned, first), min(taken, first + len(frames))):
            seq = frames[index - first].get(FLEET_SEQ)
            if seq is not None and seq > best:
                best = seq
        self._scanned = max(self._scanned, taken)
        if best <= self.client_ack:
            return False
        self.client_ack = best
        return True

    def ack_due(self) -> bool:
        """The client is ACK_EVERY frames behind what it was told: an A now."""
        return self.client_ack - self.told >= ACK_EVERY

    def sent_back(self) -> None:
        """B is written: the client resumes elsewhere; no D or A from here."""
        self.back = True
        self.stop()

    def stop(self) -> None:
        """Cancel a pending A."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
