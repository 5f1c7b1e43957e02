"""One client connection as the interface sees it, and the states it moves through.

    NEW ──► AWAITING_CLAIM ──► OWNED ◄──────────────────┐
                 ▲   │                                  │ the new app accepted
                 │   ├─(re-homed, the old owner's RETURN pending)─► FENCED ─► REHOMING
                 │   └─(re-homed)──────────────────────────────────────────► REHOMING
                 └──── re-homed (the owner drains or dies) from OWNED, FENCED, REHOMING
    any state ──► FINISHED (the interface ended the client side: closed, refused, done)

Where client events go follows from the state: held (``held``, in order) while AWAITING_CLAIM
or FENCED, straight to ``owner`` while REHOMING or OWNED, and kept (``unacked``) until the
owner acknowledges them; a lost owner's unacknowledged ones (``replay``) go to the next owner
before the held ones. Each envelope sent starts a new claim (``claim_id``, see
``relay/wire.py``): only what the current claim's owner relays counts. Every change of state
goes through :meth:`ClientConn.move`, which refuses a move the table below does not allow.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

from ..exceptions import IllegalTransition
from ..observability.metrics import METRICS
from ..relay import wire
from . import edge
from .replay import Replay, Unacked

Send = Any


class ClientState(enum.Enum):
    NEW = "new"  # nothing sent yet
    AWAITING_CLAIM = "awaiting claim"  # its envelope is in the work queue; events held
    FENCED = "fenced"  # claimed; the old owner's RETURN (its undelivered events) awaited; held
    REHOMING = "re-homing"  # claimed after a hand-over; the new app's accept not seen yet
    OWNED = "owned"  # claimed; events go straight to the owner
    FINISHED = "finished"  # the interface has ended the client side


NEW, AWAITING_CLAIM, FENCED = ClientState.NEW, ClientState.AWAITING_CLAIM, ClientState.FENCED
REHOMING, OWNED, FINISHED = ClientState.REHOMING, ClientState.OWNED, ClientState.FINISHED

_MOVES: dict[ClientState, frozenset[ClientState]] = {
    NEW: frozenset({AWAITING_CLAIM, FINISHED}),
    AWAITING_CLAIM: frozenset({OWNED, FENCED, REHOMING, FINISHED}),
    FENCED: frozenset({REHOMING, OWNED, AWAITING_CLAIM, FINISHED}),
    REHOMING: frozenset({OWNED, AWAITING_CLAIM, FINISHED}),
    OWNED: frozenset({AWAITING_CLAIM, FINISHED}),
    FINISHED: frozenset(),
}

#: States in which client events are held rather than relayed.
HOLDING = frozenset({AWAITING_CLAIM, FENCED})
#: States in which an owner has claimed the connection.
CLAIMED = frozenset({FENCED, REHOMING, OWNED})


class ClientConn:
    """One client connection (WebSocket or HTTP request) held by this interface."""

    __slots__ = (
        "id", "ws", "send", "scope", "state", "owner", "held", "accepted", "app_accepted",
        "told", "done", "sent_at", "timer", "rehomed", "handover_at", "fence", "unacked",
        "replay", "resent", "subprotocol", "claims", "claim_id", "fence_id",
    )

    def __init__(self, conn_id: str, ws: bool, send: Send, scope: dict[str, Any],
                 unacked: Unacked | None = None) -> None:
        self.id = conn_id
        self.ws = ws
        self.send = send  # the server's ASGI send for this connection
        self.scope = scope  # the server's own scope object: kept for re-homing, costs nothing
        self.state = NEW
        self.owner: str | None = None  # the worker channel that claimed it
        self.held: list[dict[str, Any]] = []  # client events waiting for the owner, in order
        self.accepted = False  # ws: the client's socket accepted; http: response started
        self.app_accepted = False  # the current owner's app accepted (re-homing ends there)
        self.told = False  # the owner has been told the client is gone (or nobody can be)
        self.done: asyncio.Future[None] | None = None  # http: response complete
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

    def __repr__(self) -> str:
        return f"<ClientConn {self.claim_id or self.id} {self.state.value} owner={self.owner}>"

    @property
    def finished(self) -> bool:
        return self.state is FINISHED

    def move(self, state: ClientState) -> None:
        """Change state; raises IllegalTransition for a move the state diagram lacks."""
        if state not in _MOVES[self.state]:
            raise IllegalTransition(f"{self.id}: {self.state.value} -> {state.value}")
        self.state = state

    def finish(self) -> bool:
        """Mark the client side ended; False if it already was."""
        if self.state is FINISHED:
            return False
        self.state = FINISHED
        self.stop_timer()
        return True

    def stop_timer(self) -> None:
        """Cancel its claim deadline, if armed."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def end(self, code: int) -> None:
        """End the client side: WebSocket close ``code``, HTTP 503 (or abort mid-response)."""
        if not self.finish():
            return
        if self.ws:
            METRICS.websocket_closed(code)
            if not self.accepted:
                # Accept first so the client sees a close code rather than a bare HTTP 403.
                self.accepted = True
                await self.send({"type": "websocket.accept"})
            await edge.close(self.send, {"code": code}, accepted=True)
        elif not self.accepted:
            self.accepted = True
            await edge.http_error(self.send, 503)
        else:
            edge.abort(self.send)
        self.complete()

    def complete(self) -> None:
        """An HTTP response is over (sent, refused or cut): whoever waits for it goes on."""
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def claimed_state(self) -> ClientState:
        """Where a claimed connection stands once no old owner's RETURN is awaited."""
        if self.fence is not None:
            return FENCED
        return REHOMING if self.rehomed and not self.app_accepted else OWNED

    def next_claim(self) -> str:
        """Start a new claim (a new envelope goes out): items of earlier ones count no more."""
        self.claims += 1
        self.claim_id = wire.claim_id(self.id, self.claims)
        return self.claim_id

    def take_held(self) -> list[dict[str, Any]]:
        """The held events, in order, leaving none."""
        held, self.held = self.held, []
        return held
