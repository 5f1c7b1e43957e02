"""QueueCollector against real Redis: depth and oldest age of the work queue, node reachability,
read at each scrape."""

from __future__ import annotations

import signal
import time

import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.cluster import RedisCluster

from channels_fleet.observability.metrics import FleetMetrics
from channels_fleet.observability.queues import QueueCollector, oldest_age
from channels_fleet.relay.wire import queue_key

pytestmark = pytest.mark.timeout(60)

KEY = queue_key("fleet", "fleet.connect")


def test_queue_key_is_the_pinned_one() -> None:
    assert KEY == "fleet:q:{fleet.connect}"


def test_oldest_age_from_the_element_format() -> None:
    now = 1_000_000.0
    element = b"%d|fleet.connect|body|with|bars" % ((now - 3 + 60) * 1000)
    assert oldest_age(element, 60, now) == pytest.approx(3.0)
    assert oldest_age(None, 60, now) == 0.0
    # A clock a little ahead on the sender never gives a negative age.
    assert oldest_age(b"%d|x|" % ((now + 1 + 60) * 1000), 60, now) == 0.0


def _fill(client, count: int, age: float, expiry: float = 60) -> None:
    expires_ms = int((time.time() - age + expiry) * 1000)
    elements = [b"%d|fleet.connect|envelope-%d" % (expires_ms + i, i) for i in range(count)]
    client.delete(KEY)
    client.rpush(KEY, *elements)


@pytest.fixture
def cluster_client(redis_cluster):
    host, port = redis_cluster.urls[0].removeprefix("redis://").split(":")
    client = RedisCluster(host=host, port=int(port))
    yield client
    client.delete(KEY)
    client.close()


def _sample(registry, name: str, **labels: str):
    return registry.get_sample_value(name, labels)


async def test_depth_and_oldest_age_on_the_cluster(redis_cluster, cluster_client) -> None:
    registry = CollectorRegistry()
    collector = QueueCollector(redis_cluster.urls[:1], metrics=FleetMetrics(registry))
    _fill(cluster_client, 25, age=3.0)
    try:
        readings = collector.register(registry).read()
        depth = _sample(registry, "channels_fleet_work_queue_depth", queue="fleet.connect")
        age = _sample(registry, "channels_fleet_work_queue_oldest_age_seconds",
                      queue="fleet.connect")
    finally:
        collector.close()
    assert collector.last_error is None
    assert [(r.queue, r.depth) for r in readings] == [("fleet.connect", 25)]
    assert depth == 25
    assert 2.9 <= age <= 4.0


async def test_empty_queue_reads_zero(redis_cluster, cluster_client) -> None:
    registry = CollectorRegistry()
    collector = QueueCollector(redis_cluster.urls[1:2], metrics=FleetMetrics(registry))
    cluster_client.delete(KEY)
    try:
        collector.register(registry)
        assert _sample(registry, "channels_fleet_work_queue_depth", queue="fleet.connect") == 0
        assert _sample(
            registry, "channels_fleet_work_queue_oldest_age_seconds", queue="fleet.connect") == 0
    finally:
        collector.close()


async def test_every_cluster_node_is_up(redis_cluster) -> None:
    registry = CollectorRegistry()
    collector = QueueCollector(redis_cluster.urls[:1], metrics=FleetMetrics(registry))
    try:
        collector.register(registry)
        for node in redis_cluster.nodes:
            label = f"127.0.0.1:{node.port}"
            assert _sample(registry, "channels_fleet_redis_node_up", node=label) == 1
    finally:
        collector.close()


async def test_a_frozen_replica_reads_as_down_then_up_again(redis_cluster) -> None:
    # SIGSTOP a replica for well under the cluster's node timeout (2 s): PING gets no answer,
    # and the shared cluster is not disturbed for other tests.
    masters = {n.port for n in redis_cluster.masters_now()}
    replica = next(n for n in redis_cluster.nodes if n.port not in masters and n.alive())
    label = f"127.0.0.1:{replica.port}"
    registry = CollectorRegistry()
    collector = QueueCollector(
        redis_cluster.urls[:1], metrics=FleetMetrics(registry), timeout=0.3)
    try:
        collector.register(registry).read()  # topology known before the freeze
        replica.kill(signal.SIGSTOP)
        try:
            down = _sample(registry, "channels_fleet_redis_node_up", node=label)
        finally:
            replica.kill(signal.SIGCONT)
        up = _sample(registry, "channels_fleet_redis_node_up", node=label)
    finally:
        collector.close()
    assert (down, up) == (0, 1)
    redis_cluster.wait_cluster_ok()


async def test_single_redis(redis_single) -> None:
    client = redis.Redis.from_url(redis_single.urls[0])
    _fill(client, 4, age=10.0)
    registry = CollectorRegistry()
    collector = QueueCollector(redis_single.urls, metrics=FleetMetrics(registry))
    try:
        collector.register(registry)
        depth = _sample(registry, "channels_fleet_work_queue_depth", queue="fleet.connect")
        age = _sample(registry, "channels_fleet_work_queue_oldest_age_seconds",
                      queue="fleet.connect")
    finally:
        collector.close()
        client.delete(KEY)
        client.close()
    assert depth == 4
    assert 9.9 <= age <= 11.0
    node = redis_single.urls[0].removeprefix("redis://")
    assert _sample(registry, "channels_fleet_redis_node_up", node=node) == 1


async def test_unreachable_redis_is_down_and_queue_series_absent(redis_single) -> None:
    from channels_fleet.dev.ports import free_ports

    (port,) = free_ports(1)
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    reachable = QueueCollector([redis_single.urls[0]], metrics=metrics).register(registry)
    try:
        assert _sample(registry, "channels_fleet_work_queue_depth", queue="fleet.connect") == 0
    finally:
        reachable.close()
    # The same registry, now read from a Redis that does not answer: no stale depth.
    collector = QueueCollector([f"redis://127.0.0.1:{port}"], metrics=metrics).register(registry)
    try:
        up = _sample(registry, "channels_fleet_redis_node_up", node=f"127.0.0.1:{port}")
        depth = _sample(registry, "channels_fleet_work_queue_depth", queue="fleet.connect")
    finally:
        collector.close()
    assert "no Redis host answered" in (collector.last_error or "")
    assert up == 0
    assert depth is None


async def test_each_scrape_reads_the_queue_as_it_is_then(redis_single) -> None:
    client = redis.Redis.from_url(redis_single.urls[0])
    client.delete(KEY)
    registry = CollectorRegistry()
    collector = QueueCollector(redis_single.urls, metrics=FleetMetrics(registry))
    collector.register(registry)
    try:
        assert _sample(registry, "channels_fleet_work_queue_depth", queue="fleet.connect") == 0
        _fill(client, 7, age=1.0)
        assert _sample(registry, "channels_fleet_work_queue_depth", queue="fleet.connect") == 7
    finally:
        collector.close()
        client.delete(KEY)
        client.close()


def test_registering_reads_nothing_and_closing_gives_the_node_gauge_back() -> None:
    from channels_fleet.dev.ports import free_ports

    (port,) = free_ports(1)  # nothing listens: a read at registration would log an error
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    metrics.redis_node_up.labels("10.0.0.9:6379").set(1)  # as the layer sets it
    collector = QueueCollector([f"redis://127.0.0.1:{port}"], metrics=metrics).register(registry)
    assert collector.last_error is None
    collector.close()
    assert _sample(registry, "channels_fleet_redis_node_up", node="10.0.0.9:6379") == 1


def test_standalone_exporter_serves_queue_metrics(redis_cluster, cluster_client,
                                                 tmp_path) -> None:
    import os
    import sys
    import urllib.request

    from channels_fleet.dev.ports import free_ports
    from channels_fleet.dev.stack import ServiceProcess

    (port,) = free_ports(1)
    _fill(cluster_client, 9, age=2.0)
    exporter = ServiceProcess(
        "exporter",
        [sys.executable, "-m", "channels_fleet.observability.queues",
         "--redis-url", ",".join(redis_cluster.urls[:3]), "--port", str(port)],
        env=os.environ, cwd=tmp_path, log=tmp_path / "exporter.log", metrics_port=port,
    )
    try:
        exporter.wait_ready(20)  # /readyz: 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read()
    finally:
        exporter.terminate_and_wait(10)
    assert b'channels_fleet_work_queue_depth{queue="fleet.connect"} 9.0' in body
    assert b'channels_fleet_redis_node_up{node="127.0.0.1:' in body


def test_standalone_exporter_without_redis_url_says_what_to_set() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CHANNELS_FLEET_REDIS_URL"}
    result = subprocess.run([sys.executable, "-m", "channels_fleet.observability.queues"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 3
    assert "CHANNELS_FLEET_REDIS_URL is not set" in result.stdout
