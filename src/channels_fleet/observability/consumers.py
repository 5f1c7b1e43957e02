"""Time every Channels consumer's event handling, by consumer class, without changing consumers.

Worker processes call this once at start:

    from channels_fleet.observability.consumers import instrument_consumers
    instrument_consumers()

Every ``dispatch`` (one event: ``websocket.receive``, a group message, ``http.request`` ...)
of every ``AsyncConsumer`` and ``SyncConsumer`` subclass is then observed in
``channels_fleet_handler_latency_seconds{consumer="<module>.<Class>"}``. Consumers handle one
event at a time, so the time in ``dispatch`` is the handler latency, including a
``SyncConsumer``'s wait for its thread. The label set is bounded by the project's classes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .metrics import METRICS, FleetMetrics, consumer_label

_MARK = "_channels_fleet_timed"


def instrument_consumers(metrics: FleetMetrics | None = None) -> bool:
    """Wrap ``AsyncConsumer.dispatch`` and ``SyncConsumer.dispatch``; False if already done."""
    from channels.consumer import AsyncConsumer, SyncConsumer

    histogram = (metrics if metrics is not None else METRICS).handler_latency
    changed = False
    for cls in (AsyncConsumer, SyncConsumer):
        original = cls.__dict__["dispatch"]
        if getattr(original, _MARK, False):
            continue
        cls.dispatch = _timed(original, histogram)
        changed = True
    return changed


def uninstrument_consumers() -> None:
    """Undo :func:`instrument_consumers` (for tests)."""
    from channels.consumer import AsyncConsumer, SyncConsumer

    for cls in (AsyncConsumer, SyncConsumer):
        current = cls.__dict__["dispatch"]
        if getattr(current, _MARK, False):
            cls.dispatch = current.__wrapped__


def _timed(original: Callable[..., Awaitable[Any]], histogram: Any) -> Any:
    children: dict[type, Any] = {}  # one labelled child per class, looked up once

    async def dispatch(self: Any, message: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            # ``original`` is a plain function or, for SyncConsumer, asgiref's SyncToAsync
            # object; both take self explicitly.
            return await original(self, message)
        finally:
            cls = type(self)
            child = children.get(cls)
            if child is None:
                child = children[cls] = histogram.labels(consumer_label(cls))
            child.observe(time.perf_counter() - started)

    dispatch.__wrapped__ = original  # type: ignore[attr-defined]
    dispatch.__doc__ = getattr(original, "__doc__", None)
    setattr(dispatch, _MARK, True)
    return dispatch
