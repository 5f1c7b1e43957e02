"""Counts layer events on ``observability.metrics.METRICS``; a metric never breaks the layer."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

try:
    from ..observability.metrics import METRICS, layer_reason
except ImportError:  # the layer also works on its own
    METRICS = None  # type: ignore[assignment]

    def layer_reason(exc: BaseException) -> str:
        return "other"


def _inc(name: str, amount: float = 1, **labels: str) -> None:
    metric: Any = getattr(METRICS, name, None)
    if metric is None:
        return
    try:
        (metric.labels(**labels) if labels else metric).inc(amount)
    except Exception as exc:
        logger.debug("metric %s not counted: %s", name, exc)


def retry(exc: BaseException) -> None:
    _inc("layer_retries", reason=layer_reason(exc))


def error(exc: BaseException) -> None:
    _inc("layer_errors", reason=layer_reason(exc))


def channel_full(operation: str, amount: int = 1) -> None:
    if amount:
        _inc("channel_full", amount, operation=operation)


def expired(amount: int) -> None:
    if amount:
        _inc("messages_expired", amount)


def dropped(reason: str, amount: int = 1) -> None:
    if amount:
        _inc("messages_dropped", amount, reason=reason)


def node_up(address: str, up: bool) -> None:
    gauge: Any = getattr(METRICS, "redis_node_up", None)
    if gauge is None:
        return
    try:
        gauge.labels(node=address).set(1 if up else 0)
    except Exception as exc:
        logger.debug("metric redis_node_up not set: %s", exc)
