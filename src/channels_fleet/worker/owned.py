"""The states of a connection a worker owns: whose it is, and how far its app has answered.

Whose it is (:class:`OwnedState`):

    RUNNING ──► HANDING_BACK ──► HANDED        (drain: given back to be re-homed; handback.py)
       │             │
       └─────────────┴──► CLOSED               (the app closed it or ended the response, or
                                                 the worker released it with a close code)
    RUNNING ◄──► DETACHED ──► CLOSED            (a resumable session's socket is lost: kept,
                                                 buffered, until a resume re-attaches it or
                                                 its window or buffer runs out; session.py)
    RUNNING, HANDING_BACK, HANDED, DETACHED, CLOSED ──► ABANDONED   (its interface is gone,
                                                 or this worker was declared dead)

Relayed events reach the app while RUNNING or DETACHED and are stashed (for the next owner)
while HANDING_BACK or HANDED. The app's messages go to the interface unless DETACHED (its
frames go to the session's Outbox only: no socket holds it), HANDED or ABANDONED (the
connection is no longer this worker's then). No DETACHED to HANDING_BACK: nobody holds a
detached session's socket to re-home it. Every change of state is one named method of
:class:`OwnedConn` (``close``, ``abandon``, ``begin_hand_back``, ``hand_back``, ``detach``,
``attach``), which refuses a move the table below does not allow. Whether the app has been
handed its disconnect event (``gone``) is apart from the state: the client can leave in any of
them.

How far its app has answered (:class:`Phase`), one protocol each:

    HANDSHAKE ──► OPEN          a WebSocket: the app sent ``websocket.accept``
    REQUEST ──► RESPONDING      HTTP: the app sent ``http.response.start``

Each moves forward once, as the app instance relays that message. The phase decides which
messages the app may send next (conformance.py) and what the client gets when the app fails
(:data:`FAILURE_ANSWER`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from ..exceptions import IllegalTransition
from ..observability.metrics import METRICS
from .inbound import Inbound

logger = logging.getLogger(__name__)


class OwnedState(enum.Enum):
    RUNNING = "running"  # the app runs; relayed events go to it
    HANDING_BACK = "handing back"  # events stashed while the app finishes what it took
    HANDED = "handed"  # given back (REHOME sent): no longer ours, its stash goes back on FENCE
    CLOSED = "closed"  # ended on this side: the app only has its disconnect left to run
    ABANDONED = "abandoned"  # its interface is gone or this worker was declared dead
    DETACHED = "detached"  # a session whose socket is lost: the app runs on, its sends kept


RUNNING, HANDING_BACK, HANDED = OwnedState.RUNNING, OwnedState.HANDING_BACK, OwnedState.HANDED
CLOSED, ABANDONED = OwnedState.CLOSED, OwnedState.ABANDONED
DETACHED = OwnedState.DETACHED

_MOVES: dict[OwnedState, frozenset[OwnedState]] = {
    RUNNING: frozenset({HANDING_BACK, CLOSED, ABANDONED, DETACHED}),
    DETACHED: frozenset({RUNNING, CLOSED, ABANDONED}),
    HANDING_BACK: frozenset({HANDED, CLOSED, ABANDONED}),
    HANDED: frozenset({ABANDONED}),
    CLOSED: frozenset({ABANDONED}),
    ABANDONED: frozenset(),
}

#: States in which nothing more is relayed to the interface for the connection.
NOT_OURS = frozenset({HANDED, ABANDONED})


class Phase(enum.Enum):
    HANDSHAKE = "handshake"  # a WebSocket its app has not accepted
    OPEN = "open"  # a WebSocket its app accepted
    REQUEST = "request"  # an HTTP request whose response has not started
    RESPONDING = "responding"  # an HTTP response whose status is out


HANDSHAKE, OPEN = Phase.HANDSHAKE, Phase.OPEN
REQUEST, RESPONDING = Phase.REQUEST, Phase.RESPONDING

#: What the client gets when its app sends a message Daphne would refuse (for the log line).
FAILURE_ANSWER = {HANDSHAKE: "500", OPEN: "1011", REQUEST: "500", RESPONDING: "a cut response"}


class OwnedConn:
    """A connection this worker owns: the app instance's inbound queue, its state and phase.

    The app running on it, and what it receives and sends: :class:`.instance.AppInstance`.
    """

    __slots__ = ("id", "iface", "ws", "state", "phase", "queue", "task", "gone", "stash",
                 "idle", "reaper", "reap_after")

    def __init__(self, conn_id: str, iface: str, ws: bool, limit: int, reap_after: float) -> None:
        self.id = conn_id
        self.iface = iface  # the interface channel holding the client's socket
        self.ws = ws  # a WebSocket, else HTTP
        self.state = RUNNING
        self.phase = HANDSHAKE if ws else REQUEST
        self.queue = Inbound(limit)  # events relayed here, not yet read by the app
        self.task: asyncio.Task[None] | None = None  # the app instance
        self.gone = False  # the app has been handed its disconnect event
        self.stash: list[dict[str, Any]] = []  # events kept for the next owner
        self.idle: asyncio.Event | None = None  # set when the app waits on an empty queue
        self.reaper: asyncio.TimerHandle | None = None  # cancels an app that outlives its end
        self.reap_after = reap_after  # Daphne's application_close_timeout

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.state.value} {self.phase.value}>"

    # -- transitions -----------------------------------------------------------------------

    def _move(self, state: OwnedState) -> None:
        """Change state; raises IllegalTransition for a move the state diagram lacks."""
        if state not in _MOVES[self.state]:
            raise IllegalTransition(f"{self.id}: {self.state.value} -> {state.value}")
        self.state = state

    def close(self) -> None:
        """Ended on this side: the app closed it or ended its response, or it was released."""
        state = self.state
        if state is RUNNING or state is HANDING_BACK or state is DETACHED:
            self._move(CLOSED)

    def abandon(self) -> None:
        """The connection is gone or no longer ours: run its disconnect, relay nothing more."""
        if self.state is ABANDONED:
            return
        self._move(ABANDONED)
        METRICS.messages_dropped.labels("dead_owner").inc()
        self.disconnect(1006)

    def begin_hand_back(self) -> None:
        """Drain: what arrives from now on is stashed for the next owner."""
        self._move(HANDING_BACK)

    def hand_back(self) -> None:
        """Given back: no longer ours; what was relayed but never taken goes first in the
        stash."""
        self.stash[:0] = self.queue.drain()
        self._move(HANDED)

    def detach(self) -> None:
        """A resumable session's socket is lost: the app runs on with no socket."""
        self._move(DETACHED)

    def attach(self, iface: str, claim: str) -> None:
        """A resume: the socket of claim ``claim`` at ``iface`` serves the session from now on
        (detached or not: a second resume takes it from the first socket)."""
        if self.state is not RUNNING:
            self._move(RUNNING)
        self.id = claim
        self.iface = iface

    # -- events ----------------------------------------------------------------------------

    async def until_idle(self, timeout: float) -> bool:
        """Wait until the app has handled all it took (it waits on an empty queue); False if
        it is still busy after ``timeout`` seconds."""
        if self.queue.waiting:
            return True
        self.idle = asyncio.Event()
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def mark_queued(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` on every event waiting for the app that has no ``key`` yet
        (on copies: events may be shared). One marked already keeps its mark: the claim it came
        under does not change with a second resume."""
        for event in self.queue.drain():
            if key not in event:
                event = {**event, key: value}
            self.queue.put(event)

    def keep(self, event: dict[str, Any]) -> None:
        """Keep an event for the new owner (bounded like the app's inbound queue)."""
        if len(self.stash) >= self.queue.maxsize:
            METRICS.messages_dropped.labels("buffer_full").inc()
            return
        self.stash.append(event)

    def disconnect(self, code: int) -> None:
        """Hand the app the disconnect event for ``code`` (:meth:`hand_disconnect`)."""
        if self.ws:
            self.hand_disconnect({"type": "websocket.disconnect", "code": code})
        else:
            self.hand_disconnect({"type": "http.disconnect"})

    def hand_disconnect(self, event: dict[str, Any]) -> None:
        """Hand the app its (single) disconnect event, even past a full inbound queue.

        An app that never reads it (an AsyncHttpConsumer streaming from handle(), a
        subscription waiting on the layer) would run, and hold its groups, for ever: Daphne
        cancels it application_close_timeout after the disconnect; so does ``reap_after``.
        """
        if self.gone:
            return
        self.gone = True
        self.queue.make_room()
        self.queue.put(event)
        self.reaper = asyncio.get_running_loop().call_later(self.reap_after, self._reap)

    def _reap(self) -> None:
        if self.task is not None and not self.task.done():
            logger.warning("%s: app still running %.3g s after its disconnect; cancelled",
                           self.id, self.reap_after)
            self.task.cancel()
