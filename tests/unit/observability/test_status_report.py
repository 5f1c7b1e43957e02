"""StatusReport: a process's heartbeat status from the counts beside its metrics (a fresh registry)."""

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
    for protocol in ("websocket", "websocket", "websocket", "websocket", "http"):
        metrics.connection_opened(protocol)
    metrics.connection_ended("websocket")
    for code in (1001, 1001):
        metrics.websocket_closed(code)
    for _ in range(5):
        metrics.rehomed("drain")
    assert report() == {
        "sockets": 3, "http": 1, "draining": False,
        "closes": {"1001": 2}, "rehomes": {"drain": 5},
        "recent": {"closes": {}, "rehomes": {}},  # the first report is the baseline
    }


def test_worker__owned_sockets_concurrency_and_draining(metrics: FleetMetrics) -> None:
    report = StatusReport("worker", concurrency=100, metrics=metrics)
    metrics.owned(7)
    metrics.drain_started()
    got = report()
    assert (got["sockets"], got["concurrency"], got["draining"]) == (7, 100, True)
    assert "http" not in got


def test_recent__counts_of_the_last_window_only(
        metrics: FleetMetrics, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(status_module.time, "monotonic", lambda: now[0])
    report = StatusReport("interface", window=60, metrics=metrics)
    report()
    for _ in range(4):
        metrics.websocket_closed(1012)
    now[0] += 30
    assert report()["recent"]["closes"] == {"1012": 4}
    metrics.websocket_closed(1000)
    now[0] += 65  # the 4 closes came before the report at 30, now over 60 s ago
    assert report()["recent"]["closes"] == {"1000": 1}
    now[0] += 100
    assert report()["recent"]["closes"] == {}
    assert report()["closes"] == {"1000": 1, "1012": 4}  # totals since start


def test_updates__set_the_exported_metric_and_the_reported_count(
        metrics: FleetMetrics) -> None:
    metrics.connection_opened("websocket")
    metrics.websocket_closed(None)  # no close frame: 1006
    metrics.websocket_closed(4000)  # outside the bounded set: other
    metrics.rehomed("dead")
    metrics.owned(3)
    metrics.drain_started()
    value = metrics.registry.get_sample_value  # type: ignore[union-attr]
    assert value("channels_fleet_open_connections", {"protocol": "websocket"}) == 1
    assert value("channels_fleet_closes_total", {"code": "1006"}) == 1
    assert value("channels_fleet_closes_total", {"code": "other"}) == 1
    assert value("channels_fleet_rehomes_total", {"cause": "dead"}) == 1
    assert value("channels_fleet_owned_connections") == 3
    assert value("channels_fleet_draining") == 1
    report = StatusReport("interface", metrics=metrics)()
    assert (report["sockets"], report["closes"], report["rehomes"], report["draining"]) == (
        1, {"1006": 1, "other": 1}, {"dead": 1}, True)


def test_heartbeat_value_is_json_with_the_time__a_failing_report_still_beats() -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("bug")

    good = Heartbeat(["redis://x"], "fleet.worker.a!1", prefix="p", status=lambda: {"n": 1})
    value = json.loads(good.value())
    assert value["n"] == 1 and value["ts"] > 1e9
    bad = Heartbeat(["redis://x"], "fleet.worker.a!1", prefix="p", status=broken)
    assert set(json.loads(bad.value())) == {"ts"}
