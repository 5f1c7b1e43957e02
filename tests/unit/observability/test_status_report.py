"""StatusReport: a process's heartbeat status read from its own metrics (a fresh registry)."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from channels_fleet.observability import status as status_module
from channels_fleet.observability.metrics import FleetMetrics
from channels_fleet.observability.status import StatusReport
from channels_fleet.relay.heartbeat import Heartbeat


@pytest.fixture
def metrics() -> FleetMetrics:
    return FleetMetrics(CollectorRegistry())


def test_interface__sockets_by_protocol_closes_and_rehomes_without_zeros(
        metrics: FleetMetrics) -> None:
    report = StatusReport("interface", metrics=metrics)
    metrics.open_connections.labels("websocket").inc(3)
    metrics.open_connections.labels("http").inc()
    metrics.closes.labels("1001").inc(2)
    metrics.rehomes.labels("drain").inc(5)
    assert report() == {
        "sockets": 3, "http": 1, "draining": False,
        "closes": {"1001": 2}, "rehomes": {"drain": 5},
        "recent": {"closes": {}, "rehomes": {}},  # the first report is the baseline
    }


def test_worker__owned_sockets_concurrency_and_draining(metrics: FleetMetrics) -> None:
    report = StatusReport("worker", concurrency=100, metrics=metrics)
    metrics.owned_connections.inc(7)
    metrics.draining.set(1)
    got = report()
    assert (got["sockets"], got["concurrency"], got["draining"]) == (7, 100, True)
    assert "http" not in got


def test_recent__counts_of_the_last_window_only(
        metrics: FleetMetrics, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(status_module.time, "monotonic", lambda: now[0])
    report = StatusReport("interface", window=60, metrics=metrics)
    report()
    metrics.closes.labels("1012").inc(4)
    now[0] += 30
    assert report()["recent"]["closes"] == {"1012": 4}
    metrics.closes.labels("1000").inc()
    now[0] += 65  # the 4 closes came before the report at 30, now over 60 s ago
    assert report()["recent"]["closes"] == {"1000": 1}
    now[0] += 100
    assert report()["recent"]["closes"] == {}
    assert report()["closes"] == {"1000": 1, "1012": 4}  # totals since start


def test_heartbeat_value_is_json_with_the_time__a_failing_report_still_beats() -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("bug")

    good = Heartbeat(["redis://x"], "fleet.worker.a!1", prefix="p", status=lambda: {"n": 1})
    value = json.loads(good.value())
    assert value["n"] == 1 and value["ts"] > 1e9
    bad = Heartbeat(["redis://x"], "fleet.worker.a!1", prefix="p", status=broken)
    assert set(json.loads(bad.value())) == {"ts"}
