"""One connection a worker owns, and the states it moves through.

    RUNNING ──► HANDING_BACK ──► HANDED        (drain: given back to be re-homed; handback.py)
       │             │
       └─────────────┴──► CLOSED               (the app closed it or ended the response, or
                                                 the worker released it with a close code)
    RUNNING, HANDING_BACK, HANDED, CLOSED ──► ABANDONED   (its interface is gone, or this
                                                 worker was declared dead)

Relayed events reach the app while RUNNING and are stashed (for the next owner) while
HANDING_BACK or HANDED. The app's messages go to the interface unless HANDED or ABANDONED: the
connection is no longer this worker's then. Every change of state goes through
:meth:`OwnedConn.move`, which refuses a move the table below does not allow. Whether the app
has been handed its disconnect event (``gone``) is apart from the state: the client can leave
in any of them.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from ..exceptions import IllegalTransition

logger = logging.getLogger(__name__)


class OwnedState(enum.Enum):
    RUNNING = "running"  # the app runs; relayed events go to it
    HANDING_BACK = "handing back"  # events stashed while the app finishes what it took
    HANDED = "handed"  # given back (REHOME sent): no longer ours, its stash goes back on FENCE
    CLOSED = "closed"  # ended on this side: the app only has its disconnect left to run
    ABANDONED = "abandoned"  # its interface is gone or this worker was declared dead


RUNNING, HANDING_BACK, HANDED = OwnedState.RUNNING, OwnedState.HANDING_BACK, OwnedState.HANDED
CLOSED, ABANDONED = OwnedState.CLOSED, OwnedState.ABANDONED

_MOVES: dict[OwnedState, frozenset[OwnedState]] = {
    RUNNING: frozenset({HANDING_BACK, CLOSED, ABANDONED}),
    HANDING_BACK: frozenset({HANDED, CLOSED, ABANDONED}),
    HANDED: frozenset({ABANDONED}),
    CLOSED: frozenset({ABANDONED}),
    ABANDONED: frozenset(),
}

#: States in which nothing more is relayed to the interface for the connection.
NOT_OURS = frozenset({HANDED, ABANDONED})


class OwnedConn:
    """A connection this worker owns: the app instance's inbound queue and its state."""

    __slots__ = (
        "id", "iface", "ws", "state", "queue", "task", "accepted", "gone", "stash", "waiting",
        "idle", "reaper", "subprotocol", "taken", "handled", "refused",
    )

    def __init__(self, conn_id: str, iface: str, ws: bool, limit: int) -> None:
        self.id = conn_id
        self.iface = iface  # the interface channel holding the client's socket
        self.ws = ws
        self.state = RUNNING
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=limit)
        self.task: asyncio.Task[None] | None = None  # the app instance
        self.accepted = False  # ws accepted / http response started, by the app
        self.gone = False  # the app has been handed its disconnect event
        self.stash: list[dict[str, Any]] = []  # events kept for the next owner
        self.waiting = False  # the app is blocked in receive()
        self.idle: asyncio.Event | None = None  # set when the app waits on an empty queue
        self.reaper: asyncio.TimerHandle | None = None  # cancels an app that outlives its end
        self.subprotocol: str | None = None  # as accepted by the app
        self.taken = 0  # client frames relayed here that the app has taken (acks.py)
        self.handled = 0  # ... and handled (it asked for the next event since)
        self.refused: BaseException | None = None  # why an app's message was refused

    def __repr__(self) -> str:
        return f"<OwnedConn {self.id} {self.state.value}>"

    def move(self, state: OwnedState) -> None:
        """Change state; raises IllegalTransition for a move the state diagram lacks."""
        if state not in _MOVES[self.state]:
            raise IllegalTransition(f"{self.id}: {self.state.value} -> {state.value}")
        self.state = state

    def disconnect_event(self, code: int) -> dict[str, Any]:
        """The disconnect event the app gets for this connection."""
        if self.ws:
            return {"type": "websocket.disconnect", "code": code}
        return {"type": "http.disconnect"}

    def hand_disconnect(self, event: dict[str, Any], reap_after: float) -> None:
        """Hand the app its (single) disconnect event, even past a full inbound queue.

        An app that never reads it (an AsyncHttpConsumer streaming from handle(), a
        subscription waiting on the layer) would run, and hold its groups, for ever: Daphne
        cancels it application_close_timeout after the disconnect; so does ``reap_after``.
        """
        if self.gone:
            return
        self.gone = True
        while self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(event)
        self.reaper = asyncio.get_running_loop().call_later(reap_after, self._reap, reap_after)

    def _reap(self, after: float) -> None:
        if self.task is not None and not self.task.done():
            logger.warning("%s: app still running %.3g s after its disconnect; cancelled",
                           self.id, after)
            self.task.cancel()

    def take_queued(self) -> list[dict[str, Any]]:
        """The events relayed but not yet taken by the app, in order, leaving none."""
        taken = []
        while not self.queue.empty():
            taken.append(self.queue.get_nowait())
        return taken
