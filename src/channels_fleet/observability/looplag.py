"""How late the event loop runs a scheduled callback: the saturation of a one-threaded process.

Interfaces and workers run everything on one asyncio loop (the interface's is Twisted's asyncio
reactor). A loop with spare time runs a timer callback within a millisecond of when it was due;
a busy one runs it after whatever else is queued, so the lateness grows with the load before
connections are refused or latency shows up in any handler. Every ``interval`` seconds the probe
schedules one callback and observes how late it ran in
``channels_fleet_event_loop_lag_seconds{component}``:

    probe = LoopLagProbe(METRICS.event_loop_lag.labels("worker")).start()
    ...
    probe.stop()

A plain ``call_later`` chain (no task, no coroutine) costs a few microseconds per tick.
"""

from __future__ import annotations

import asyncio
from typing import Any

DEFAULT_INTERVAL = 0.25  # seconds between two measurements


class LoopLagProbe:
    """Observe, every ``interval`` seconds, how late the running loop runs a timer callback."""

    def __init__(self, histogram: Any, interval: float = DEFAULT_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        self.histogram = histogram  # a Histogram child: anything with .observe(seconds)
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> LoopLagProbe:
        """Start measuring on the running loop (call from a coroutine or callback on it)."""
        self._loop = asyncio.get_running_loop()
        self._schedule()
        return self

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        assert self._loop is not None
        due = self._loop.time() + self.interval
        self._handle = self._loop.call_at(due, self._tick, due)

    def _tick(self, due: float) -> None:
        assert self._loop is not None
        # asyncio may run a timer up to its clock resolution early: never a negative lag.
        self.histogram.observe(max(0.0, self._loop.time() - due))
        self._schedule()
