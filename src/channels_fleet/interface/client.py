"""One client connection as the interface sees it, and the states it moves through.

    NEW ──► AWAITING_CLAIM ──(claimed)──────────────────────────► OWNED
                 ▲   └──(claimed after a hand-over)──► REHOMING ──┘ (the new app accepted)
                 └──── handed over (the owner drains or dies) from OWNED or REHOMING
    OWNED, REHOMING ──► DETACHED (a resumable session's socket is gone, its session lives)
    any state ──► FINISHED (the interface ended the client side: closed, refused, answered)

DETACHED is the home interface's (the one popping the consumer's homed channel, inbox.py):
it keeps the connection, no socket, only to relay that channel's messages to the owner under
the old claim, until the session ends (SESSION_END); the owner it relays to changes when the
session's socket, resumed elsewhere, moves to another worker (:meth:`~ClientConn.orphan`,
:meth:`~ClientConn.reclaimed`).

Each arrow is one method (:meth:`ClientConn.await_claim`, :meth:`~ClientConn.claimed_by`,
:meth:`~ClientConn.app_accepted`, :meth:`~ClientConn.hand_over`, :meth:`~ClientConn.detach`,
:meth:`~ClientConn.finish`);
a move the diagram lacks raises IllegalTransition. Apart from the state, a socket handed over
by a draining owner may wait for that old owner's RETURN (``fence``, see rehome.py): a wait of
its own, which can begin before the next claim and end after it.

Where client events go follows: held (``held``, in order) while AWAITING_CLAIM or fenced,
else straight to ``owner`` (REHOMING or OWNED), and kept (``unacked``) until the owner
acknowledges them; a lost owner's unacknowledged ones (``replay``) go to the next owner
before the held ones. Each envelope sent starts a new claim (``claim_id``, see
``relay/wire.py``): only what the current claim's owner relays counts.

The gateway's connections are one :class:`Connections`: the others find a connection through
it (``current(claim)``: the one rule for whether a worker's item counts) and apply the owners'
ACKs with it (:meth:`Connections.on_ack`, to each connection's :class:`Unacked`, replay.py).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import IllegalTransition
from ..relay import wire
from .replay import ClientEvent, Replay, Unacked

if TYPE_CHECKING:
    from .session import SocketSession

logger = logging.getLogger(__name__)


class ClientState(enum.Enum):
    NEW = "new"  # nothing sent yet
    AWAITING_CLAIM = "awaiting claim"  # its envelope is in the work queue; events held
    REHOMING = "re-homing"  # claimed after a hand-over; the new app's accept not seen yet
    OWNED = "owned"  # claimed; events go straight to the owner
    DETACHED = "detached"  # a session's socket is gone; channel messages still go to the owner
    FINISHED = "finished"  # the interface has ended the client side


NEW, AWAITING_CLAIM = ClientState.NEW, ClientState.AWAITING_CLAIM
REHOMING, OWNED, FINISHED = ClientState.REHOMING, ClientState.OWNED, ClientState.FINISHED
DETACHED = ClientState.DETACHED

_MOVES: dict[ClientState, frozenset[ClientState]] = {
    NEW: frozenset({AWAITING_CLAIM, FINISHED}),
    AWAITING_CLAIM: frozenset({OWNED, REHOMING, FINISHED}),
    REHOMING: frozenset({OWNED, AWAITING_CLAIM, DETACHED, FINISHED}),
    OWNED: frozenset({AWAITING_CLAIM, DETACHED, FINISHED}),
    DETACHED: frozenset({FINISHED}),
    FINISHED: frozenset(),
}

#: States in which an owner has claimed the connection.
CLAIMED = frozenset({REHOMING, OWNED})


class ClientConn:
    """One client connection (WebSocket or HTTP request) held by this interface."""

    __slots__ = (
        "id", "ws", "send", "scope", "state", "owner", "held", "accepted", "told", "responded",
        "sent_at", "timer", "rehomed", "handover_at", "fence", "unacked", "replay", "resent",
        "subprotocol", "claims", "claim_id", "fence_id", "channel", "kept", "session",
    )

    def __init__(self, conn_id: str, ws: bool, send: Any, scope: dict[str, Any],
                 unacked: Unacked | None = None) -> None:
        self.id = conn_id
        self.ws = ws
        self.send = send  # the server's ASGI send for this connection
        self.scope = scope  # the server's own scope object: kept for re-homing, costs nothing
        self.state = NEW
        self.owner: str | None = None  # the worker channel that claimed it
        self.held: list[ClientEvent] = []  # client events waiting for the owner, in order
        self.accepted = False  # ws: the client's socket accepted; http: response started
        self.told = False  # the owner has been told the client is gone (or nobody can be)
        self.responded: asyncio.Future[None] | None = None  # http: set once the response is over
        self.sent_at = 0.0  # monotonic time its last envelope went out
        self.timer: asyncio.TimerHandle | None = None  # its claim deadline
        self.rehomed = 0  # times handed to a new owner
        self.handover_at = 0.0  # monotonic time the last hand-over began
        self.fence: str | None = None  # an old owner whose RETURN is awaited
        self.fence_id: str | None = None  # ... and the claim it returns for
        self.claims = 0  # envelopes sent for it
        self.claim_id = ""  # what the last one (the current claim) goes by on the wire
        self.unacked = unacked  # ws, re-homing on: frames the owner has not acknowledged
        self.replay: Replay | None = None  # a lost owner's unacknowledged frames, for the next
        self.resent = False  # its current envelope went out a second time
        self.subprotocol: str | None = None  # as accepted by the app
        # ws: its consumer's channel, homed here (inbox.py), or, resumed from elsewhere, at the
        # session's home (session.home)
        self.channel: str | None = None
        #: (key prefix, groups) old app instances left while it moved: discarded at its end
        self.kept: list[tuple[str, list[str]]] = []
        self.session: SocketSession | None = None  # ws: its resumable session (session.py)

    def __repr__(self) -> str:
        return f"<ClientConn {self.claim_id or self.id} {self.state.value} owner={self.owner}>"

    @property
    def finished(self) -> bool:
        return self.state is FINISHED

    @property
    def home(self) -> bool:
        """Its consumer's channel is homed here: this interface pops it (inbox.py)."""
        return self.channel is not None and not (self.session is not None and self.session.home)

    # -- transitions: one method each ------------------------------------------------------

    def await_claim(self) -> str:
        """A connect envelope goes out: a new claim (items of earlier ones count no more),
        awaited. Returns its id."""
        if self.state is not AWAITING_CLAIM:
            self._move(AWAITING_CLAIM)
        self.claims += 1
        self.claim_id = wire.claim_id(self.id, self.claims)
        self.sent_at = time.monotonic()
        return self.claim_id

    def claimed_by(self, owner: str) -> None:
        """``owner`` claimed it: OWNED, or REHOMING until the new app accepts a handed-over one."""
        self._move(REHOMING if self.rehomed else OWNED)
        self.owner = owner

    def app_accepted(self) -> bool:
        """The owner's app accepted: re-homing is over. True if it was re-homing."""
        if self.state is not REHOMING:
            return False
        self._move(OWNED)
        if self.fence is None:  # else the timer bounds the wait for the old owner's RETURN
            self.stop_timer()  # its accept deadline (claims.py)
        return True

    def hand_over(self) -> str | None:
        """The owner drains or died: a new claim is to be awaited. Returns the old owner."""
        self._move(AWAITING_CLAIM)
        old, self.owner = self.owner, None
        self.stop_timer()
        self.rehomed += 1
        self.resent = False  # a new envelope: it may be sent again once too
        self.handover_at = time.monotonic()
        return old

    def detach(self) -> None:
        """A session's socket is gone (lost, or superseded by a resume) and this interface is
        its home: kept for the homed channel's messages, whose ``unacked`` (the owner counts
        them under this claim) a next owner gets should this one die."""
        self._move(DETACHED)
        self.stop_timer()

    def orphan(self) -> None:
        """A DETACHED connection's owner died or let go: the homed channel's messages are held
        (``held``) until a worker that took the session over claims it (:meth:`reclaimed`)."""
        if self.state is not DETACHED:
            raise IllegalTransition(f"{self.id}: orphaned while {self.state.value}")
        self.owner = None
        self.stop_timer()

    def reclaimed(self, owner: str) -> None:
        """A worker took the DETACHED connection's session over (its CLAIM of the claim it
        goes by): the homed channel's messages go to it from now on."""
        if self.state is not DETACHED:
            raise IllegalTransition(f"{self.id}: reclaimed while {self.state.value}")
        self.owner = owner
        self.told = False
        self.stop_timer()

    def finish(self) -> bool:
        """Mark the client side ended; False if it already was."""
        if self.state is FINISHED:
            return False
        self.state = FINISHED
        self.stop_timer()
        return True

    def _move(self, state: ClientState) -> None:
        if state not in _MOVES[self.state]:
            raise IllegalTransition(f"{self.id}: {self.state.value} -> {state.value}")
        self.state = state

    # -- the rest of its state -------------------------------------------------------------

    def relay_to(self) -> str | None:
        """The owner its events go straight to; None while they are held (no claim yet, or
        an old owner's RETURN awaited). A DETACHED one gets only its channel's messages."""
        state = self.state  # identity tests: this is per frame
        if (state is OWNED or state is REHOMING or state is DETACHED) and self.fence is None:
            return self.owner
        return None

    def take_owner_to_tell(self) -> str | None:
        """Whom to tell that the client side is over: the owner, the first time; None after
        that or with no owner. Taking it marks the owner told, so a path that needs no telling
        (the owner released the connection, or died) takes it and drops it."""
        if self.told:
            return None
        self.told = True
        return self.owner

    def lose_owner(self) -> None:
        """The owner died and nobody takes the socket over: there is nobody to tell."""
        self.told = True
        self.owner = None

    def set_fence(self, worker: str, claim: str) -> None:
        """Wait for ``worker``'s RETURN of ``claim``: events are held meanwhile."""
        self.fence, self.fence_id = worker, claim

    def clear_fence(self) -> None:
        self.fence = self.fence_id = None

    def mark_responded(self) -> None:
        """An HTTP response is over (sent, refused or cut): whoever waits for it goes on."""
        if self.responded is not None and not self.responded.done():
            self.responded.set_result(None)

    def stop_timer(self) -> None:
        """Cancel its claim deadline, if armed."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def take_held(self) -> list[ClientEvent]:
        """The held events, in order, leaving none."""
        held, self.held = self.held, []
        return held


class Connections:
    """The gateway's open connections, by id: the one registry, for every part of the gateway."""

    def __init__(self, client_acked: Callable[[ClientConn], None],
                 pass_on: Callable[[str, list[Any], str], bool]) -> None:
        self._by_id: dict[str, ClientConn] = {}
        #: A resumable session's client_ack rose (session.py): its client is to be told.
        self.client_acked = client_acked
        #: ``pass_on(forwarder, entries, owner)``: ACK counts for another forwarder, sent on to
        #: it; False if the forwarder is this interface.
        self.pass_on = pass_on

    def add(self, conn: ClientConn) -> None:
        self._by_id[conn.id] = conn

    def get(self, conn_id: str) -> ClientConn | None:
        return self._by_id.get(conn_id)

    def discard(self, conn: ClientConn) -> bool:
        """Forget ``conn``; False if it was not here."""
        return self._by_id.pop(conn.id, None) is not None

    def values(self) -> list[ClientConn]:
        """The connections, as a list: ending one while going through it is safe."""
        return list(self._by_id.values())

    def current(self, claim: str) -> ClientConn | None:
        """The unfinished connection whose current claim is ``claim`` (an item's conn), or None:
        the one rule for whether a worker's item counts."""
        conn = self._by_id.get(wire.claimed_conn(claim))
        if conn is None or conn.claim_id != claim or conn.state is FINISHED:
            return None
        return conn

    def fenced(self, claim: str) -> ClientConn | None:
        """The unfinished connection whose old owner's RETURN for ``claim`` is awaited, or None."""
        conn = self._by_id.get(wire.claimed_conn(claim))
        if conn is None or conn.fence_id != claim or conn.state is FINISHED:
            return None
        return conn

    def _passed_on(self, entries: list[Any], owner: str) -> list[Any]:
        """Pass each forwarder its counts; what is left is this interface's."""
        ours: list[Any] = []
        passed: dict[str, list[Any]] = {}
        for entry in entries:
            if len(entry) == 4:
                passed.setdefault(entry[3], []).append(entry[:3])
            else:
                ours.append(entry)
        for forwarder, counts in passed.items():
            if not self.pass_on(forwarder, counts, owner):
                ours.extend(counts)
        return ours

    def owners(self) -> set[str]:
        """The workers the unfinished connections depend on: owners, and old owners whose
        RETURN is awaited (the gateway watches their heartbeats)."""
        owners: set[str] = set()
        for c in self._by_id.values():
            if c.state is not FINISHED:
                owners.update(w for w in (c.owner, c.fence) if w)
        return owners

    async def on_ack(self, owner: str, entries: list[Any], sender: str) -> None:
        """The ``wire.ACK`` handler: ``sender``'s apps (``owner``'s, passed on by another
        interface) have handled these frames, which need no replay then.

        An entry naming a forwarder counts what a session's home (or the worker adopting it)
        forwarded to its app; it rides here with the output it covers, so that the forwarder
        learns only of messages whose output reached this interface, and goes on to it."""
        try:
            wire.parse_acks(entries)
        except wire.WireError as exc:
            logger.warning("ignored an ack from %s: %s", sender, exc)
            return
        if any(len(entry) == 4 for entry in entries):
            entries = self._passed_on(entries, owner or sender)
        current = self.current
        for claim, handled, taken in entries:
            conn = current(claim)
            # Only the current claim's counts: frames are numbered from it.
            if conn is not None and conn.unacked is not None:
                if conn.session is not None and conn.session.took(claim, conn.unacked, taken):
                    self.client_acked(conn)
                conn.unacked.ack(handled, taken)
