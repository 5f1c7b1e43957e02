"""Every role on a TLS-only Redis Cluster, each as its documented ACL user, as on a managed one.

Each process is configured as the chart configures a pod: ``CHANNELS_FLEET_REDIS_URL`` is a bare
``rediss://`` URL, and the user, password and private CA come beside it
(``CHANNELS_FLEET_REDIS_USERNAME``, ``_PASSWORD``, ``_CA_FILE``). The real code runs: the layer
(round trips, groups, a receive blocked across a failover), the relay between an interface
and a worker with heartbeats, the queue exporter's metrics, ``fleet_status()``,
``wait-for-redis``, and the project's own ``CHANNEL_LAYERS`` as a fleet process adopts it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry
from support.relay_round_trip import relay_round_trip
from support.tls_cluster import TlsCluster

from channels_fleet import fleet_status
from channels_fleet.adopt import plan_alias, redact
from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.layers.keys import channel_key
from channels_fleet.observability.metrics import FleetMetrics
from channels_fleet.observability.queues import QueueCollector
from channels_fleet.worker.settings import WorkerSettings

pytestmark = pytest.mark.timeout(60)


def layer_for(cluster: TlsCluster, role: str, made: list[RedisClusterChannelLayer],
              **options: Any) -> RedisClusterChannelLayer:
    layer = RedisClusterChannelLayer(hosts=list(cluster.settings(role).redis_url), **options)
    made.append(layer)
    return layer


def test_tls_only__no_plain_port_and_the_default_user_is_off(tls_cluster: TlsCluster) -> None:
    once = Retry(NoBackoff(), 0)
    with pytest.raises(redis.ConnectionError):  # the server speaks TLS, nothing else
        redis.Redis(port=tls_cluster.ports[0], socket_timeout=2, retry=once).ping()
    default = redis.Redis(host="127.0.0.1", port=tls_cluster.ports[0], ssl=True,
                          ssl_ca_certs=str(tls_cluster.ca.path), retry=once)
    with pytest.raises(redis.AuthenticationError):
        default.ping()
    default.close()
    with tls_cluster.admin(tls_cluster.ports[0]) as admin:
        config = admin.config_get("tls-*")
        assert (config["tls-cluster"], config["tls-replication"]) == ("yes", "yes")
        assert admin.config_get("port")["port"] == "0"


async def test_worker_and_web__round_trips_and_groups(
        tls_cluster: TlsCluster, layers: list[RedisClusterChannelLayer]) -> None:
    worker = layer_for(tls_cluster, "worker", layers, expiry=10)
    web = layer_for(tls_cluster, "web", layers, expiry=10)
    await web.send("tls.jobs", {"n": 1})
    assert await worker.receive("tls.jobs") == {"n": 1}
    mine = await worker.new_channel()
    await worker.group_add("room", mine)
    await web.group_send("room", {"type": "chat.message", "text": "hi"})
    assert await worker.receive(mine) == {"type": "chat.message", "text": "hi"}
    await worker.group_discard("room", mine)


async def test_the_project_layer__adopted_hosts_connect_as_the_process(
        tls_cluster: TlsCluster, layers: list[RedisClusterChannelLayer]) -> None:
    """A project's settings.py names the Redis without user or CA; a worker process connects
    it with its own (the rule of adopt.py: same host and port as CHANNELS_FLEET_REDIS_URL)."""
    settings = tls_cluster.settings("worker")
    project = {"BACKEND": "channels_redis.core.RedisChannelLayer",
               "CONFIG": {"hosts": [f"rediss://127.0.0.1:{tls_cluster.ports[0]}"]}}
    plan = plan_alias("default", project, settings.redis_url, settings.redis_access)
    assert plan.config is not None
    layer = RedisClusterChannelLayer(**plan.config["CONFIG"])
    layers.append(layer)
    await layer.send("tls.project", {"n": 2})
    assert await layer.receive("tls.project") == {"n": 2}


async def test_interface_and_worker__relay_round_trip__exporter__fleet_status__wait_for_redis(
        tls_cluster: TlsCluster, layers: list[RedisClusterChannelLayer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    beats = {"metrics_port": 0, "heartbeat_interval": 0.2, "heartbeat_ttl": 0.6}
    iface_settings = tls_cluster.settings("interface", InterfaceSettings, name="i1", **beats)
    worker_settings = tls_cluster.settings("worker", WorkerSettings, name="w1", app="unused:app",
                                           **beats)
    async with relay_round_trip(iface_settings, worker_settings, layers):
        # The queue metrics: the standalone exporter's and each side's /metrics.
        for role in ("exporter", "interface", "worker"):
            registry = CollectorRegistry()
            collector = QueueCollector.for_settings(tls_cluster.settings(role, WorkerSettings,
                                                                         app="unused:app"),
                                                    metrics=FleetMetrics(registry=registry))
            try:
                collector.register(registry)
                await asyncio.to_thread(registry.collect)
                readings = await asyncio.to_thread(collector.read)
            finally:
                collector.close()
            assert collector.last_error is None, role
            assert [(r.queue, r.depth) for r in readings] == [("fleet.connect", 0)], role
            up = [s for m in registry.collect() if m.name == "channels_fleet_redis_node_up"
                  for s in m.samples]
            assert len(up) == len(tls_cluster.ports) and all(s.value == 1 for s in up), role

        # fleet_status() in a process configured by the environment alone.
        for name, value in tls_cluster.env("exporter").items():
            monkeypatch.setenv(name, value)
        fleet = await asyncio.to_thread(fleet_status)
        assert [(p["kind"], p["name"]) for p in fleet["processes"]] == [
            ("interface", "i1"), ("worker", "w1")]

    # The chart's init container, as its own process, with each pod's environment.
    for role in ("interface", "worker"):
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "channels_fleet.redis_wait"],
            env={**os.environ, **tls_cluster.env(role)}, capture_output=True, text=True,
            timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        url = redact(tls_cluster.settings(role).redis_url[0])
        assert done.stdout == f"Redis at {url} is up\n"
        assert f"fleet-{role}:***@" in url and "ssl_ca_certs" in url


async def test_a_receive_blocked_across_a_failover_gets_the_message(
        tls_cluster: TlsCluster, layers: list[RedisClusterChannelLayer]) -> None:
    """CLUSTER FAILOVER on the replica of the channel's primary while a worker's BLMPOP waits
    there (over TLS, as the worker user); the web user's send after it reaches the receive."""
    worker = layer_for(tls_cluster, "worker", layers, expiry=10)
    web = layer_for(tls_cluster, "web", layers, expiry=10)
    await web.send("tls.failover", {"n": 0})  # both connected, slot tables read
    assert await worker.receive("tls.failover") == {"n": 0}
    primary, replica = tls_cluster.primary_and_replica(
        key_slot(channel_key("asgi", "tls.failover").encode()))
    pending = asyncio.ensure_future(worker.receive("tls.failover"))
    await asyncio.sleep(0.3)  # blocked on the primary
    try:
        with tls_cluster.admin(replica) as admin:
            await asyncio.to_thread(admin.execute_command, "CLUSTER", "FAILOVER")
            deadline = time.monotonic() + 15
            while admin.info("replication")["role"] != "master":
                assert time.monotonic() < deadline, "the replica did not take over"
                await asyncio.sleep(0.05)
        await web.send("tls.failover", {"n": 1})
        assert await asyncio.wait_for(pending, 15) == {"n": 1}
        with tls_cluster.admin(primary) as admin:  # the old primary follows the new one
            assert admin.info("replication")["role"] == "slave"
    finally:
        pending.cancel()
        await asyncio.to_thread(tls_cluster.wait_formed)
