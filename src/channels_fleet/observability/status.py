"""What an interface or worker reports in its heartbeat, from the counts beside its metrics.

The services hand one :class:`StatusReport` to their heartbeat (``relay/heartbeat.py``), which
calls it once a beat (every second, on the heartbeat's thread) and stores the result, as JSON,
in the heartbeat key; :func:`channels_fleet.fleet.fleet_status` reads it back for every live
process. The numbers are counted where the process's Prometheus metrics are updated
(``FleetMetrics.status``), so a beat reads plain counters, not the metrics back.

    liveness = RedisLiveness(settings, status=StatusReport("worker", concurrency=1000,
                                                           full_for=host.full_for))

A report (the heartbeat adds ``ts``, ``name``, ``kind`` and ``pid``)::

    {"sockets": 12, "http": 0, "concurrency": 1000, "full_for": 0.0, "draining": false,
     "closes": {"1000": 3, "1001": 40}, "rehomes": {"drain": 12},
     "recent": {"closes": {"1001": 40}, "rehomes": {"drain": 12}}}

``closes`` (interfaces: client WebSockets closed, by code) and ``rehomes`` (interfaces:
sockets handed to a new worker, by cause) count since the process started, zeros left out;
``recent`` is the same over the last ``window`` seconds. ``full_for`` (workers): seconds the
worker has taken no connection for want of room (it owns ``concurrency``), 0 while it has room;
interfaces refuse new connections when every worker has been full for a beat
(``relay/room.py``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from .metrics import METRICS, FleetMetrics

Counts = dict[str, dict[str, int]]


class StatusReport:
    """Builds one process's heartbeat status from the counts of ``metrics`` (its own)."""

    def __init__(self, kind: Literal["interface", "worker"], *, concurrency: int | None = None,
                 full_for: Callable[[], float] | None = None, window: float = 60.0,
                 metrics: FleetMetrics | None = None) -> None:
        self.kind = kind
        self.concurrency = concurrency
        self.full_for = full_for
        self.window = window
        self.metrics = metrics if metrics is not None else METRICS
        self._history: deque[tuple[float, Counts]] = deque()

    def __call__(self) -> dict[str, Any]:
        counted = self.metrics.status
        if self.kind == "interface":
            report: dict[str, Any] = {"sockets": counted.open["websocket"],
                                      "http": counted.open["http"]}
        else:
            report = {"sockets": counted.owned, "concurrency": self.concurrency}
            if self.full_for is not None:
                report["full_for"] = round(self.full_for(), 3)
        report["draining"] = counted.draining
        counts = {"closes": _nonzero(counted.closes),
                  "rehomes": _nonzero(counted.rehomes)}
        return {**report, **counts, "recent": self._recent(counts)}

    def _recent(self, counts: Counts) -> Counts:
        """``counts`` minus what they were ``window`` seconds ago (or at the first report)."""
        now = time.monotonic()
        self._history.append((now, counts))
        while len(self._history) > 1 and self._history[1][0] <= now - self.window:
            self._history.popleft()
        _, then = self._history[0]
        return {kind: _nonzero({k: v - then[kind].get(k, 0) for k, v in by.items()})
                for kind, by in counts.items()}


def _nonzero(values: dict[str, int]) -> dict[str, int]:
    return {key: value for key, value in sorted(values.items()) if value}
