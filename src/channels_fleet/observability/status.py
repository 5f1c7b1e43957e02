"""What an interface or worker reports in its heartbeat, read from its own metrics.

The services hand one :class:`StatusReport` to their heartbeat (``relay/liveness.py``), which
calls it once a beat (every second, on the heartbeat's thread) and stores the result, as JSON,
in the heartbeat key; :func:`channels_fleet.fleet.fleet_status` reads it back for every live
process. Nothing is counted twice: the numbers are the process's Prometheus metrics.

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

from prometheus_client.metrics import MetricWrapperBase

from .metrics import METRICS, FleetMetrics

Counts = dict[str, dict[str, int]]


def _values(metric: MetricWrapperBase, label: str | None = None) -> dict[str, float]:
    """A metric's current samples by the value of ``label`` ("" for an unlabelled one)."""
    out: dict[str, float] = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out[sample.labels.get(label, "") if label else ""] = sample.value
    return out


class StatusReport:
    """Builds one process's heartbeat status from ``metrics`` (the process's own)."""

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
        m = self.metrics
        if self.kind == "interface":
            open_now = _values(m.open_connections, "protocol")
            report: dict[str, Any] = {"sockets": int(open_now.get("websocket", 0)),
                                      "http": int(open_now.get("http", 0))}
        else:
            report = {"sockets": int(_values(m.owned_connections).get("", 0)),
                      "concurrency": self.concurrency}
            if self.full_for is not None:
                report["full_for"] = round(self.full_for(), 3)
        report["draining"] = bool(_values(m.draining).get(""))
        counts = {"closes": _nonzero(_values(m.closes, "code")),
                  "rehomes": _nonzero(_values(m.rehomes, "cause"))}
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


def _nonzero(values: dict[str, float]) -> dict[str, int]:
    return {key: int(value) for key, value in sorted(values.items()) if value}
