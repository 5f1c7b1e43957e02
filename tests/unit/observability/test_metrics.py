"""The metric declarations: names, units, bounded labels, helpers, multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis import exceptions as rx

from channels_fleet.observability import metrics as m
from channels_fleet.observability.queues import QueueReading, queue_families


class QueueFamilies:
    """The work-queue families as a QueueCollector exports them, without Redis."""

    def collect(self):
        return queue_families([QueueReading("fleet.connect", 3, 0.4)])


@pytest.fixture
def fresh() -> tuple[CollectorRegistry, m.FleetMetrics]:
    registry = CollectorRegistry()
    metrics = m.FleetMetrics(registry)
    registry.register(QueueFamilies())
    return registry, metrics


def _families(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        # client_python strips _total from counter family names; put it back.
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_declared_family_is_listed_in_all_names(fresh) -> None:
    registry, _ = fresh
    assert _families(registry) == set(m.ALL_NAMES)


def test_pinned_names_exist() -> None:
    pinned = {
        "layer_retries_total", "layer_errors_total", "channel_full_total",
        "messages_expired_total", "redis_node_up", "open_connections", "closes_total",
        "relay_roundtrip_seconds", "messages_total", "draining", "owned_connections",
        "queue_wait_seconds", "handler_latency_seconds", "worker_heartbeat_age_seconds",
        "work_queue_depth", "work_queue_oldest_age_seconds",
    }
    assert {f"channels_fleet_{n}" for n in pinned} <= m.ALL_NAMES


def test_bounded_labels_start_at_zero(fresh) -> None:
    registry, _ = fresh
    for code in m.CLOSE_CODES:
        assert registry.get_sample_value("channels_fleet_closes_total", {"code": code}) == 0
    for reason in m.LAYER_REASONS:
        value = registry.get_sample_value("channels_fleet_layer_retries_total", {"reason": reason})
        assert value == 0
    assert registry.get_sample_value(
        "channels_fleet_open_connections", {"protocol": "websocket"}) == 0
    # Web series appear on first use only (no idle series on interfaces and workers).
    assert registry.get_sample_value(
        "channels_fleet_web_requests_total", {"method": "GET", "status": "2xx"}) is None


def test_histogram_counts_an_observation_in_the_right_bucket(fresh) -> None:
    registry, metrics = fresh
    metrics.relay_roundtrip.observe(0.0007)
    name = "channels_fleet_relay_roundtrip_seconds_bucket"
    assert registry.get_sample_value(name, {"le": "0.0005"}) == 0
    assert registry.get_sample_value(name, {"le": "0.001"}) == 1
    assert registry.get_sample_value("channels_fleet_relay_roundtrip_seconds_count") == 1


def test_buckets_go_from_sub_millisecond_to_seconds() -> None:
    assert list(m.LATENCY_BUCKETS) == sorted(m.LATENCY_BUCKETS)
    assert m.LATENCY_BUCKETS[0] < 0.001 and m.LATENCY_BUCKETS[-1] >= 5


def test_two_instances_on_one_registry_are_refused() -> None:
    registry = CollectorRegistry()
    m.FleetMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        m.FleetMetrics(registry)


@pytest.mark.parametrize(
    ("code", "label"),
    [(1000, "1000"), (1001, "1001"), (1012, "1012"), (1013, "1013"), (4000, "other"),
     (None, "1006"), (3000, "other")],
)
def test_close_code_label(code, label) -> None:
    assert m.close_code_label(code) == label


def test_small_label_helpers() -> None:
    assert m.status_class(204) == "2xx"
    assert m.status_class(503) == "5xx"
    assert m.status_class(99) == "other"
    assert m.method_label("get") == "GET"
    assert m.method_label("PROPFIND") == "other"

    class ChatConsumer:
        pass

    assert m.consumer_label(ChatConsumer).endswith("ChatConsumer")
    assert m.consumer_label(ChatConsumer()) == m.consumer_label(ChatConsumer)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (rx.MovedError("3999 127.0.0.1:6381"), "moved"),
        (rx.AskError("3999 127.0.0.1:6381"), "ask"),
        (rx.ClusterDownError("CLUSTERDOWN"), "failover"),
        (rx.TryAgainError("TRYAGAIN"), "failover"),
        (rx.ReadOnlyError("READONLY"), "failover"),
        (rx.TimeoutError("timed out"), "timeout"),
        (TimeoutError(), "timeout"),
        (rx.ConnectionError("refused"), "connection"),
        (ConnectionResetError(), "connection"),
        (rx.ResponseError("WRONGTYPE"), "other"),
    ],
)
def test_layer_reason(exc, reason) -> None:
    assert m.layer_reason(exc) == reason
    assert reason in m.LAYER_ERROR_REASONS


def test_declarations_work_in_multiprocess_mode(tmp_path) -> None:
    # Two processes write their own files; MultiProcessCollector adds them up.
    code = (
        "import os; from channels_fleet.observability.metrics import METRICS;"
        "METRICS.web_requests.labels('GET', '2xx').inc(3);"
        "METRICS.open_connections.labels('websocket').inc(2);"
        "print(os.getpid())"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pids = [
        int(subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30,
                           capture_output=True).stdout)
        for _ in range(2)
    ]
    from prometheus_client import multiprocess

    def collect() -> CollectorRegistry:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
        return registry

    labels = {"method": "GET", "status": "2xx"}
    assert collect().get_sample_value("channels_fleet_web_requests_total", labels) == 6
    ws = {"protocol": "websocket"}
    assert collect().get_sample_value("channels_fleet_open_connections", ws) == 4
    # What gunicorn's child_exit hook does: a dead worker's live gauges stop counting,
    # its counters stay (they are history).
    for pid in pids:
        multiprocess.mark_process_dead(pid, str(tmp_path))
    assert collect().get_sample_value("channels_fleet_open_connections", ws) is None
    assert collect().get_sample_value("channels_fleet_web_requests_total", labels) == 6
    assert b"channels_fleet_web_requests_total" in generate_latest(collect())
