"""The chart's wait-for-redis (channels_fleet.redis_wait) on real Redis servers: it lets the apps
start only once every node of a cluster has every slot in its table."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from channels_fleet.dev.cluster import LocalRedis, RedisNode
from channels_fleet.dev.ports import free_ports
from channels_fleet.layers.topology import SLOTS
from channels_fleet.redis_wait import check

pytestmark = pytest.mark.timeout(60)


def slots_known(port: int) -> int:
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        return int(client.cluster("info")["cluster_slots_assigned"])
    finally:
        client.close()


@pytest.fixture
def empty_nodes(tmp_path: Path) -> Iterator[list[RedisNode]]:
    nodes = [RedisNode(port, tmp_path / str(port), cluster=True)
             for port in free_ports(3, with_bus=True)]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def test_formed_cluster_and_single_redis_are_ready(redis_cluster: LocalRedis,
                                                   redis_single: LocalRedis) -> None:
    assert check(redis_cluster.urls[0]) is None
    assert check(redis_single.urls[0]) is None


def test_forming_cluster__ready_only_once_every_node_has_every_slot(
        empty_nodes: list[RedisNode]) -> None:
    """Three masters take a third of the slots each and the first meets the others: it learns
    their slots first, the others learn each other's by gossip later. Polled as fast as it
    answers, the check must never say ready while any node still misses a slot (asking the
    first node alone did, in a loop of this test)."""
    first, *others = empty_nodes
    clients = [redis.Redis(port=node.port) for node in empty_nodes]
    for shard, client in enumerate(clients):
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", shard * SLOTS // 3,
                               (shard + 1) * SLOTS // 3 - 1)
    assert check(first.url) == f"cluster_state is fail, {SLOTS // 3} of {SLOTS} slots assigned"
    for node in others:
        clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
    verdicts = []
    deadline = time.monotonic() + 30
    while (why := check(first.url)) is not None:
        verdicts.append(why)
        assert time.monotonic() < deadline, f"never ready; last: {why}"
    assert [slots_known(node.port) for node in empty_nodes] == [SLOTS] * 3
    assert verdicts, "ready before the nodes had met: the check cannot have looked"
    for client in clients:
        client.close()


def test_unreachable_redis__waits_and_says_why(tmp_path: Path) -> None:
    """The init container's own loop, as the chart runs it: it waits, naming the cause, and
    returns 0 once the server it waited for comes up."""
    port = free_ports(1)[0]
    env = {"CHANNELS_FLEET_REDIS_URL": f"redis://:secret@127.0.0.1:{port}", "PATH": "/usr/bin"}
    with subprocess.Popen([sys.executable, "-m", "channels_fleet.redis_wait"], env=env,
                          stdout=subprocess.PIPE, text=True) as waiter:
        assert waiter.stdout is not None
        try:
            first = waiter.stdout.readline()
            assert first.startswith(f"waiting for Redis at redis://:***@127.0.0.1:{port}: "
                                    "ConnectionError"), first
            node = RedisNode(port, tmp_path / "late", config={"requirepass": "secret"})
            node.start()
            try:
                assert waiter.wait(timeout=30) == 0
                assert waiter.stdout.read().strip().endswith(
                    f"Redis at redis://:***@127.0.0.1:{port} is up")
            finally:
                node.kill()
        finally:
            waiter.kill()
