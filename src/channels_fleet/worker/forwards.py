"""What an adopter forwarded to other workers' sessions and they have not handled yet.

The adopter (adopter.py) pops a dead home's LIST and forwards each message to the worker that
runs its session, under the session's home claim. That worker's app instance ACKs them to the
forwarder as it did to the live home (session.HomeCounts: counted from 0 for each forwarder),
and the adopter keeps each claim's unacknowledged messages here, as the live home's Unacked
does (interface/replay.py), so that none is lost when that worker dies:

- the adopter watches the workers it forwards to (:meth:`Forwards.workers`); when one dies
  (:meth:`Forwards.workers_dead`) its claims are HELD: new messages for them wait here, and the
  adopter reads its hash again until the claim's route names another live worker (the next
  owner, which records itself when it finds the home dead), at most ``wait`` seconds;
- then (and whenever a claim's route names another worker: a drained owner handed the socket
  back) the unacknowledged messages go to the new worker first, marked ``fleet_replayed``,
  then the held ones, in order; numbering starts again at 0 (the next owner may be this very
  worker: then they are delivered to its instance at once);
- past ``wait`` the claim's messages are dropped, counted, one log line.

Each claim keeps at most ``limit`` messages; beyond, the oldest goes (counted): a replay would
then have a hole, as an interface's full Unacked.

    forwards = Forwards(relay, me, limit=500, wait=23.0, deliver=to_own_session)
    forwards.send(worker, claim, body)         # after the MESSAGE item went (or instead)
    forwards.on_ack(entries, sender)           # the owner's ACK item
    forwards.workers_dead(dead)                # liveness
    forwards.rerouted({claim: worker}, dead)   # the hash, read again
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.relay import Relay

logger = logging.getLogger(__name__)


class _Sent:
    """One claim's forwarded messages: numbered from 0 for its current worker."""

    __slots__ = ("worker", "bodies", "first", "held", "until")

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.bodies: list[bytes] = []  # not yet handled, oldest first
        self.first = 0  # the number of bodies[0]
        self.held: list[bytes] | None = None  # while its worker is dead: what waits
        self.until = 0.0  # monotonic: while held, the last moment to find a new worker


class Forwards:
    """Per home claim, the messages forwarded to another worker and not yet handled there."""

    def __init__(self, relay: Relay, me: str, limit: int, wait: float,
                 deliver: Callable[[str, dict[str, Any]], None]) -> None:
        self.relay = relay
        self.me = me  # this worker's channel
        self.deliver = deliver  # to our own session of a claim (its next owner may be us)
        self.limit = limit
        self.wait = wait
        self.sent: dict[str, _Sent] = {}  # home claim -> what went to its worker
        self.dead: set[str] = set()  # workers liveness found dead (never routed to again)

    def workers(self) -> set[str]:
        """The workers forwarded to: liveness watches them."""
        return {s.worker for s in self.sent.values()} - self.dead

    @property
    def holding(self) -> bool:
        return any(s.held is not None for s in self.sent.values())

    def send(self, worker: str, claim: str, body: bytes) -> bool:
        """``body`` is for ``claim`` at ``worker`` (its route): keep it; True if the caller is
        to post it now, False if it waits (the claim is held) or went with a replay."""
        sent = self.sent.get(claim)
        if sent is None:
            sent = self.sent[claim] = _Sent(worker)
        if sent.held is not None or worker in self.dead:
            self._hold(sent).append(body)
            return False
        if sent.worker != worker:
            self._move(claim, sent, worker)
        self._keep(claim, sent, body)
        return True

    def forget(self, claims: set[str]) -> None:
        """These claims' sessions ended (gone from the hash): nothing more to keep."""
        for claim in claims:
            self.sent.pop(claim, None)

    def on_ack(self, entries: list[Any], sender: str) -> None:
        """``sender``'s app instances handled the first ``handled`` of what went to them."""
        for claim, handled, _ in entries:
            sent = self.sent.get(claim)
            if sent is None or sent.worker != sender or sent.held is not None:
                continue
            done = min(handled - sent.first, len(sent.bodies))
            if done > 0:
                del sent.bodies[:done]
                sent.first += done

    def workers_dead(self, dead: set[str]) -> None:
        """Liveness: hold the claims whose worker died until the hash names another."""
        self.dead |= dead & {s.worker for s in self.sent.values()}
        for sent in self.sent.values():
            if sent.worker in dead:
                self._hold(sent)

    def rerouted(self, routes: dict[str, str]) -> None:
        """The hash read again (``routes``: home claim -> worker): held claims that name a new
        live worker get what waited; those past their wait drop it."""
        now = time.monotonic()
        for claim, sent in list(self.sent.items()):
            if sent.held is None:
                if claim not in routes and not sent.bodies:
                    del self.sent[claim]  # its session ended (or is moving: numbered afresh)
                continue
            worker = routes.get(claim)
            if worker == self.me:
                self.moved_here(claim)
            elif worker is not None and worker != sent.worker and worker not in self.dead:
                held, sent.held = sent.held, None
                self._move(claim, sent, worker)
                for body in held:
                    self._keep(claim, sent, body)
                    self.relay.post(worker, [wire.MESSAGE, "", [body, [claim]]])
            elif now > sent.until:
                dropped = len(sent.bodies) + len(sent.held)
                METRICS.messages_dropped.labels("other").inc(dropped)
                logger.warning("adopted messages for %s: its worker %s died and no other took "
                               "it in %.0fs; %d dropped", claim, sent.worker, self.wait, dropped)
                del self.sent[claim]
        self.dead &= {s.worker for s in self.sent.values()}

    def moved_here(self, claim: str) -> None:
        """The claim's session runs on this worker now: what its old worker left unhandled,
        then what waited, to our instance at once (before the adopter delivers it more)."""
        sent = self.sent.pop(claim, None)
        if sent is None:
            return
        for body in sent.bodies:
            self.deliver(claim, {"type": wire.CHANNEL_MESSAGE, "body": body, wire.REPLAYED: True})
        for body in sent.held or ():
            self.deliver(claim, {"type": wire.CHANNEL_MESSAGE, "body": body})

    def _hold(self, sent: _Sent) -> list[bytes]:
        if sent.held is None:
            sent.held = []
            sent.until = time.monotonic() + self.wait
        return sent.held

    def _move(self, claim: str, sent: _Sent, worker: str) -> None:
        """The claim's session runs on ``worker`` now: what the old one left unhandled goes
        there first, marked replayed (perhaps handled: seen twice then)."""
        for body in sent.bodies:
            event = {"type": wire.CHANNEL_MESSAGE, "body": body, wire.REPLAYED: True}
            self.relay.post(worker, [wire.EVENT, claim, event])
        sent.worker = worker
        sent.first = 0
        sent.bodies = list(sent.bodies)  # renumbered from 0 for the new worker

    def _keep(self, claim: str, sent: _Sent, body: bytes) -> None:
        bodies = sent.bodies
        bodies.append(body)
        if len(bodies) > self.limit:
            del bodies[0]
            sent.first += 1
            METRICS.messages_dropped.labels("other").inc()
            if sent.first == 1:
                logger.warning("adopted messages for %s: more than %d unhandled at %s; the "
                               "oldest are dropped from its replay", claim, self.limit,
                               sent.worker)

