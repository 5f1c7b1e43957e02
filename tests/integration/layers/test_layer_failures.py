"""Unreachable Redis, wrong configuration, MOVED, and a real master failover."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.ports import free_ports
from channels_fleet.exceptions import LayerConfigError, LayerUnavailable
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.layers.keys import channel_key, group_key, slot_of

logger = logging.getLogger(__name__)


@pytest.mark.timeout(20)
async def test_unreachable_redis__clear_error_after_bounded_retry():
    port = free_ports(1)[0]  # nothing listens here
    layer = RedisClusterChannelLayer(hosts=[f"redis://127.0.0.1:{port}"], retry_timeout=1.5)
    start = time.monotonic()
    with pytest.raises(LayerUnavailable, match=f"127.0.0.1:{port}.*retry_timeout"):
        await layer.send("nowhere", {"n": 1})
    assert 1.0 <= time.monotonic() - start < 6
    node_up = REGISTRY.get_sample_value(
        "channels_fleet_redis_node_up", {"node": f"127.0.0.1:{port}"}
    )
    assert node_up == 0
    await layer.close_pools()


def test_hosts__a_bare_string_is_refused():
    with pytest.raises(LayerConfigError, match="list of redis:// URLs"):
        RedisClusterChannelLayer(hosts="redis://localhost:6379")


def test_hosts__unknown_option_is_refused():
    with pytest.raises(LayerConfigError, match="bogus_option"):
        RedisClusterChannelLayer(hosts=["redis://localhost:1"], bogus_option=1)


async def test_hosts__several_single_servers_is_a_config_error(redis_single: LocalRedis):
    url = redis_single.urls[0]
    layer = RedisClusterChannelLayer(hosts=[url, url])
    with pytest.raises(LayerConfigError, match="not a Redis Cluster node"):
        await layer.send("x", {})
    await layer.close_pools()


async def test_hosts__channels_redis_dict_form_is_accepted(redis_single: LocalRedis):
    layer = RedisClusterChannelLayer(hosts=[{"address": redis_single.urls[0]}], prefix="dictform")
    await layer.send("dict.form", {"n": 1})
    assert await layer.receive("dict.form") == {"n": 1}
    await layer.flush()
    await layer.close_pools()


async def test_cluster__stale_slot_table_follows_moved(redis_cluster: LocalRedis):
    """Point our slot cache at the wrong master: the MOVED reply puts it right."""
    layer = RedisClusterChannelLayer(hosts=redis_cluster.urls[:1], prefix="moved")
    await layer.send("moved.warmup", {})
    await layer.receive("moved.warmup")
    state = next(iter(layer._states.values()))
    key = channel_key("moved", "moved.target")
    right = state.router.node_for(key)
    wrong = next(n for n in state.router.primaries() if n is not right)
    host, _, port = wrong.address.rpartition(":")
    state.router.set_slot(slot_of(key), host, int(port))
    await layer.send("moved.target", {"n": 1})
    assert state.router.node_for(key) is right
    state.router.set_slot(slot_of(key), host, int(port))
    assert await layer.receive("moved.target") == {"n": 1}
    await layer.flush()
    await layer.close_pools()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_failover__sigkill_master_mid_stream_sends_and_receives_continue(tmp_path: Path):
    """SIGKILL the master of a channel's slot while messages flow; its replica takes over.

    The layer is not restarted. Messages acknowledged to the sender but not yet replicated
    when the master died can be lost (Redis replication is asynchronous): count them.
    """
    cluster = LocalRedis(tmp_path, masters=3, replicas=1).start()
    layer = RedisClusterChannelLayer(hosts=cluster.urls[:3], prefix="failover", capacity=10_000)
    channel = "failover.stream"
    sent: list[int] = []
    received: list[int] = []
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def produce():
        i = 0
        while not stop.is_set():
            try:
                await layer.send(channel, {"i": i})
                sent.append(i)
            except Exception as exc:  # a send that failed after retry_timeout
                errors.append(exc)
            i += 1
            await asyncio.sleep(0.005)

    async def consume():
        while True:
            try:
                received.append((await layer.receive(channel))["i"])
            except Exception as exc:
                errors.append(exc)

    retries_before = _retries()
    try:
        await layer.send(channel, {"i": -1})
        assert (await layer.receive(channel))["i"] == -1
        producer, consumer = asyncio.ensure_future(produce()), asyncio.ensure_future(consume())
        while len(received) < 100:
            await asyncio.sleep(0.05)
        state = next(iter(layer._states.values()))
        owner_address = state.router.node_for(channel_key("failover", channel)).address
        owner = next(n for n in cluster.nodes if owner_address.endswith(f":{n.port}"))
        assert _cli(owner.port, "role").startswith("master")
        killed_at = len(sent)
        owner.kill()
        await asyncio.to_thread(cluster.wait_cluster_ok, 60)
        # keep going until 200 more messages made it through the new master
        target = len(received) + 200
        deadline = time.monotonic() + 40
        while len(received) < target and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await producer
        drain_deadline = time.monotonic() + 5
        while len(set(received)) < len(sent) and time.monotonic() < drain_deadline:
            await asyncio.sleep(0.05)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        lost = set(sent) - set(received)
        logger.warning(
            "failover: sent=%d received=%d lost=%d (killed at message %d) send errors=%d",
            len(sent), len(received), len(lost), killed_at, len(errors),
        )
        print(f"failover: sent={len(sent)} received={len(received)} lost={len(lost)} "
              f"errors={len(errors)}")
        assert len(received) >= target, "receiving did not continue after the failover"
        assert _retries() > retries_before, "the failover was not counted as retries"
        assert len(lost) <= 50, f"lost {len(lost)} messages in the failover"
        assert len(received) == len(set(received)) or len(received) - len(set(received)) <= 5
    finally:
        await layer.close_pools()
        cluster.stop()


@pytest.mark.timeout(60)
async def test_silent_master__next_try_goes_to_its_replica(tmp_path: Path):
    """A master that stops answering with its connections open (its node cut off, SIGSTOP
    here) after its replica took its slots: the command waiting on it times out once, and the
    next try reads the new slot table. Before, the next try went to the silent master again
    and spent the rest of the retry budget there (a second socket timeout): past this
    retry_timeout, the command failed."""
    cluster = LocalRedis(tmp_path, masters=3, replicas=1).start()
    layer = RedisClusterChannelLayer(
        hosts=[{"address": url, "socket_timeout": 1.5} for url in cluster.urls[:3]],
        retry_timeout=1.0)
    silent = None
    try:
        await layer.group_add("room", "specific.a!1")  # the connection to its master is open
        key = group_key(layer.prefix, "room")
        state = next(iter(layer._states.values()))
        master_address = state.router.node_for(key).address
        silent = next(n for n in cluster.nodes if master_address.endswith(f":{n.port}"))
        replica = next(n for n in cluster.nodes if n is not silent
                       and _cli(n.port, "role").split("\n")[2:3] == [str(silent.port)])
        _cli(replica.port, "cluster", "failover")
        deadline = time.monotonic() + 10
        while not _cli(silent.port, "role").startswith("slave"):
            assert time.monotonic() < deadline, "the replica did not take over"
            await asyncio.sleep(0.02)
        silent.kill(signal.SIGSTOP)
        await layer.group_add("room", "specific.a!2")  # LayerUnavailable before
        assert state.router.node_for(key).address.endswith(f":{replica.port}")
    finally:
        if silent is not None:
            silent.kill(signal.SIGCONT)
        await layer.close_pools()
        cluster.stop()


def _retries() -> float:
    return sum(
        REGISTRY.get_sample_value("channels_fleet_layer_retries_total", {"reason": reason}) or 0
        for reason in ("moved", "ask", "failover", "timeout", "connection")
    )


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    ).stdout


async def test_cluster__slot_being_migrated_follows_ask(redis_cluster: LocalRedis):
    """A slot in migration answers ASK for keys it no longer has: sends and receives follow."""
    layer = RedisClusterChannelLayer(hosts=redis_cluster.urls[:1], prefix="asktest")
    await layer.send("ask.warmup", {})
    await layer.receive("ask.warmup")
    state = next(iter(layer._states.values()))
    key = channel_key("asktest", "ask.target")
    slot = slot_of(key)
    source = state.router.node_for(key)
    target = next(n for n in state.router.primaries() if n is not source)
    source_port, target_port = (int(n.address.rpartition(":")[2]) for n in (source, target))
    source_id = _cli(source_port, "cluster", "myid").strip()
    target_id = _cli(target_port, "cluster", "myid").strip()
    try:
        importing = _cli(target_port, "cluster", "setslot", str(slot), "importing", source_id)
        migrating = _cli(source_port, "cluster", "setslot", str(slot), "migrating", target_id)
        assert (importing.strip(), migrating.strip()) == ("OK", "OK")
        # the key does not exist on the source: the source answers ASK, the target serves it
        await layer.send("ask.target", {"n": 1})
        await layer.send("ask.target", {"n": 2})
        assert await asyncio.wait_for(layer.receive("ask.target"), 10) == {"n": 1}
        assert await asyncio.wait_for(layer.receive("ask.target"), 10) == {"n": 2}
        # the messages went through the target: the source still redirects for the key
        assert _cli(source_port, "exists", key).startswith("ASK")
    finally:
        for port in (source_port, target_port):
            _cli(port, "cluster", "setslot", str(slot), "stable")
        await layer.flush()
        await layer.close_pools()


@pytest.mark.timeout(60)
async def test_failover__handed_over_master_wakes_receivers_and_moves_its_slots(tmp_path: Path):
    """A master hands its slots to its replica (CLUSTER FAILOVER, as the chart's preStop does).

    A receive blocked on the old master is woken with UNBLOCKED: it retries on the new master
    instead of failing, and the first MOVED re-reads the whole table, so every other slot of
    the old master points at the new one too (no redirection, or connect timeout, per slot).
    """
    cluster = LocalRedis(tmp_path, masters=3, replicas=1).start()
    layer = RedisClusterChannelLayer(hosts=cluster.urls[:3], prefix="handover")
    try:
        await layer.send("handover.warmup", {})
        await layer.receive("handover.warmup")
        state = next(iter(layer._states.values()))
        router = state.router
        owner = router.node_for(channel_key("handover", "handover.target"))
        # another channel served by the same master, whose slot no command will touch
        other = next(
            key for key in (channel_key("handover", f"handover.other{i}") for i in range(1000))
            if router.node_for(key) is owner
            and slot_of(key) != slot_of(channel_key("handover", "handover.target"))
        )
        owner_port = int(owner.address.rpartition(":")[2])
        role = _cli(owner_port, "role").split()
        replica_port = int(role[3])  # master, offset, then each replica's ip, port, offset
        receiving = asyncio.ensure_future(layer.receive("handover.target"))
        await asyncio.sleep(0.3)  # blocked in BLMPOP on the old master
        assert _cli(replica_port, "cluster", "failover").strip() == "OK"
        deadline = time.monotonic() + 20
        while not _cli(owner_port, "role").startswith("slave"):
            assert time.monotonic() < deadline, "the manual failover did not happen"
            await asyncio.sleep(0.05)
        await layer.send("handover.target", {"n": 1})
        assert await asyncio.wait_for(receiving, 10) == {"n": 1}
        deadline = time.monotonic() + 5
        while router.node_for(other).address.endswith(f":{owner_port}"):
            assert time.monotonic() < deadline, "the slot table was not re-read after MOVED"
            await asyncio.sleep(0.05)
        assert router.node_for(other).address.endswith(f":{replica_port}")
    finally:
        await layer.close_pools()
        cluster.stop()
