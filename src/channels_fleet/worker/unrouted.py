"""What an adopter popped for names it cannot route yet (adopter.py).

A session's worker records its homed name in the home's hash when it finds the home dead. One
that finds it after the adopter does, or dies first (its socket is then re-homed, and the next
owner records the name once its app takes it again), leaves the adopter with messages for a
name not in the hash. They wait here, per name and in order, until the name shows up (then
they go before anything newer for it) or until ``wait`` has passed: then they are dropped,
counted, with one log line (the name was a plain socket's, or its session ended).

    unrouted = Unrouted(wait=23.0, limit=500)
    unrouted.park(name, body)
    for name, bodies in unrouted.found(known): ...   # the hash read again: route them now
    for name, count in unrouted.expired(): ...        # dropped
"""

from __future__ import annotations

import time
from collections.abc import Container

from ..observability.metrics import METRICS


class Unrouted:
    """Per homed name, the popped messages waiting for the name's route."""

    def __init__(self, wait: float, limit: int) -> None:
        self.wait = wait  # how long a name may take to show up
        self.limit = limit  # most messages kept per name; beyond, the oldest goes (counted)
        self._parked: dict[str, tuple[float, list[bytes]]] = {}  # name -> (deadline, bodies)

    def __bool__(self) -> bool:
        return bool(self._parked)

    def __contains__(self, name: object) -> bool:
        return name in self._parked

    def park(self, name: str, body: bytes) -> None:
        parked = self._parked.get(name)
        if parked is None:
            parked = self._parked[name] = (time.monotonic() + self.wait, [])
        bodies = parked[1]
        bodies.append(body)
        if len(bodies) > self.limit:
            del bodies[0]
            METRICS.messages_dropped.labels("other").inc()

    def found(self, known: Container[str]) -> list[tuple[str, list[bytes]]]:
        """The names now ``known`` (routable), with what waited for each, oldest first."""
        ready = [name for name in self._parked if name in known]
        return [(name, self._parked.pop(name)[1]) for name in ready]

    def expired(self) -> list[tuple[str, int]]:
        """The names whose wait has passed, with how many messages they dropped (counted)."""
        now = time.monotonic()
        late = [name for name, (deadline, _) in self._parked.items() if now > deadline]
        dropped = [(name, len(self._parked.pop(name)[1])) for name in late]
        for _, count in dropped:
            METRICS.messages_dropped.labels("other").inc(count)
        return dropped
