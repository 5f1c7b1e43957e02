"""LoopLagProbe on a real event loop: near zero when idle, the blocked time when blocked."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from channels_fleet.observability.looplag import LoopLagProbe
from channels_fleet.observability.metrics import FleetMetrics

pytestmark = pytest.mark.timeout(20)


def lag_samples(registry: CollectorRegistry) -> tuple[float, float]:
    labels = {"component": "worker"}
    count = registry.get_sample_value("channels_fleet_event_loop_lag_seconds_count", labels)
    total = registry.get_sample_value("channels_fleet_event_loop_lag_seconds_sum", labels)
    return count or 0.0, total or 0.0


async def test_idle_loop__lag_near_zero() -> None:
    registry = CollectorRegistry()
    probe = LoopLagProbe(FleetMetrics(registry).event_loop_lag.labels("worker"),
                         interval=0.02).start()
    await asyncio.sleep(0.5)
    probe.stop()
    count, total = lag_samples(registry)
    assert count >= 10
    assert total / count < 0.01  # an idle loop runs a timer within milliseconds


async def test_blocked_loop__lag_is_the_blocked_time() -> None:
    registry = CollectorRegistry()
    probe = LoopLagProbe(FleetMetrics(registry).event_loop_lag.labels("worker"),
                         interval=0.05).start()
    await asyncio.sleep(0.12)
    before_count, before_sum = lag_samples(registry)
    time.sleep(0.4)  # a handler hogging the loop: the next tick is due in <= 50 ms
    await asyncio.sleep(0.01)
    count, total = lag_samples(registry)
    probe.stop()
    assert count == before_count + 1  # one late tick, not a catch-up burst
    # 0.35-0.4 s of lag; the upper bound leaves room for a shared machine's scheduling.
    assert 0.3 <= total - before_sum <= 0.6
    largest = registry.get_sample_value("channels_fleet_event_loop_lag_seconds_bucket",
                                        {"component": "worker", "le": "0.25"})
    assert largest == before_count  # only the blocked tick is above 250 ms


async def test_stop__no_more_ticks() -> None:
    registry = CollectorRegistry()
    probe = LoopLagProbe(FleetMetrics(registry).event_loop_lag.labels("worker"),
                         interval=0.01).start()
    await asyncio.sleep(0.05)
    probe.stop()
    count, _ = lag_samples(registry)
    await asyncio.sleep(0.05)
    assert lag_samples(registry)[0] == count


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval must be > 0"):
        LoopLagProbe(object(), interval=0)
