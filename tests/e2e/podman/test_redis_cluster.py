"""The chart's built-in Redis Cluster, run from its rendered StatefulSet with podman.

The pods run files/redis/node.sh exactly as the chart mounts it, on the local Valkey stand-in
(Debian trixie's valkey-server 8.1; the official image runs the same script). Each pod
has its own address and the shared hosts file stands in for the headless Service's DNS, so a pod
that comes back gets a new address and an empty data directory, as a rescheduled pod without
persistence does. What must hold:

- 3 shards of a master and a replica each form one cluster by themselves (pod 0 of shard 0
  creates it from the shards' pod 0s), every pod ready, each replica in its own shard;
- the masters form it without their replicas (Pending: a shard's pods need nodes of their own),
  which join their own shards when they come;
- a shard out (its master lost, no replica) leaves the other shards serving and their pods ready;
- a replica deleted and recreated empty takes its old place: 6 nodes known, none stale;
- a master deleted gracefully hands its slots to its replica first (preStop): no write lost;
- a master killed (SIGKILL) is replaced by its replica within seconds; its pod rejoins;
- two of three masters killed at once (no majority left to vote): their replicas take over;
- a master killed and back at once with its nodes.conf but not its data (a container restart,
  or a claim without RDB/AOF) has its replica take its slots over first: no key lost;
- without replicas, a master's replacement takes its old slots; one master alone restarts alone.

Skipped (with the reason) when podman or the stand-in images (make images) are missing.
"""

from __future__ import annotations

import re
import time

import pytest

from .chart_pods import Pod, PodRunner, unusable_reason
from .secrets_job import run_secrets_job

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

STANDINS = ("localhost/valkey-standin:latest",)
SLOTS = 16384


@pytest.fixture(autouse=True)
def _needs_podman():
    reason = unusable_reason(STANDINS)
    if reason:
        pytest.skip(f"Redis Cluster pods on podman: {reason}")


def render_redis(*sets: str) -> list:
    from chart.helm import render  # tests/chart/helm.py: helm template of the chart

    return list(render(sets=("redis.image.registry=localhost",
                             "redis.image.repository=valkey-standin", "redis.image.tag=latest",
                             *sets)))


def redis_pods(*sets: str) -> PodRunner:
    """The pods of those values, with the Secrets the chart's secrets Job makes (the Redis
    password is no part of the render)."""
    runner = PodRunner(render_redis(*sets))
    run_secrets_job(runner)
    return runner


def cli(pod: Pod, *args: str) -> str:
    # timeout: a MOVED to a node just killed would wait for TCP's own timeout.
    done = pod.exec("sh", "-c", 'timeout 3 valkey-cli --no-auth-warning -a "$REDIS_PASSWORD" "$@"',
                    "cli", *args)
    return done.stdout.replace("\r", "")


def write_keys(pod: Pod, count: int = 60) -> list[str]:
    """Keys k0.. (each its own value) written through ``pod``, spread over the slots."""
    keys = [f"k{i}" for i in range(count)]
    for key in keys:
        assert cli(pod, "-c", "set", key, key).strip() == "OK"
    return keys


def nodes(pod: Pod) -> list[dict]:
    """CLUSTER NODES as seen by `pod`."""
    out = []
    for line in cli(pod, "cluster", "nodes").splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        addr = parts[1]
        out.append({"id": parts[0], "ip": addr.split(":")[0],
                    "host": addr.split(",")[1] if "," in addr else "",
                    "flags": parts[2].split(","), "master": parts[3],
                    "slots": [s for s in parts[8:] if not s.startswith("[")]})
    return out


def myself(pod: Pod) -> dict:
    """The pod's own node, as it sees itself."""
    return next(n for n in nodes(pod) if "myself" in n["flags"])


def wait_failed(pod: Pod, node_id: str, timeout: float = 30) -> list[dict]:
    """The nodes ``pod`` flags failed, once it flags ``node_id`` so. A majority of masters must
    have missed it for cluster-node-timeout (5 s) and gossiped it: seconds more on a busy
    machine."""
    deadline = time.monotonic() + timeout
    while True:
        failed = [n for n in nodes(pod) if "fail" in n["flags"]]
        if any(n["id"] == node_id for n in failed) or time.monotonic() > deadline:
            return failed
        time.sleep(0.5)


def slot_range(node: dict) -> set[int]:
    slots = set()
    for s in node["slots"]:
        lo, _, hi = s.partition("-")
        slots.update(range(int(lo), int(hi or lo) + 1))
    return slots


def slot_count(node: dict) -> int:
    total = 0
    for s in node["slots"]:
        lo, _, hi = s.partition("-")
        total += int(hi or lo) - int(lo) + 1
    return total


def healthy(pods: list[Pod], masters: int, replicas: int) -> str | None:
    """None when every pod sees the same, complete cluster; else what is wrong."""
    want = masters * (1 + replicas)
    for pod in pods:
        info = cli(pod, "cluster", "info")
        if "cluster_state:ok" not in info:
            return f"{pod.name}: cluster_state not ok"
        view = nodes(pod)
        if len(view) != want:
            return f"{pod.name}: knows {len(view)} nodes, want {want}: {view}"
        if any(f in ("fail", "fail?", "handshake", "noaddr") for n in view for f in n["flags"]):
            return f"{pod.name}: failing nodes in {view}"
        owners = [n for n in view if "master" in n["flags"] and n["slots"]]
        if len(owners) != masters or sum(slot_count(n) for n in owners) != SLOTS:
            return f"{pod.name}: {len(owners)} masters own slots"
        for m in owners:
            copies = [n for n in view if n["master"] == m["id"]]
            if len(copies) != replicas:
                return f"{pod.name}: master {m['host']} has {len(copies)} replicas"
            strangers = [n["host"] for n in copies if shard_of(n["host"]) != shard_of(m["host"])]
            if strangers:
                return f"{pod.name}: master {m['host']} replicated by another shard's {strangers}"
        hosts = sorted(n["host"] for n in view)
        if len(set(hosts)) != len(hosts):
            return f"{pod.name}: a hostname twice (stale node kept): {hosts}"
    return None


def wait_healthy(pods: list[Pod], masters: int, replicas: int, timeout: float = 90) -> float:
    t0 = time.monotonic()
    problem = "not checked"
    while time.monotonic() - t0 < timeout:
        problem = healthy(pods, masters, replicas)
        if problem is None:
            return time.monotonic() - t0
        time.sleep(1)
    logs = "\n".join(f"--- {p.name}\n{p.logs()[-1500:]}" for p in pods)
    raise AssertionError(f"cluster not healthy in {timeout}s: {problem}\n{logs}")


def shard_of(pod_name_or_host: str) -> str:
    """The shard of a pod (<release>-redis-shard-<shard>-<ordinal>, maybe with a domain)."""
    return pod_name_or_host.split(".")[0].rsplit("-", 1)[0]


def start_pod(runner: PodRunner, name: str) -> Pod:
    """Start the pod of that name (its shard's StatefulSet, its ordinal)."""
    shard, ordinal = name.rsplit("-", 2)[1:]
    return runner.start(f"redis/{shard}", int(ordinal))


def start_all(runner: PodRunner, masters: int, replicas: int, *,
              ordinals: range | None = None) -> list[Pod]:
    pods = [runner.start(f"redis/{shard}", ordinal) for shard in range(masters)
            for ordinal in (ordinals or range(1 + replicas))]
    for pod in pods:
        runner.wait_ready(pod, timeout=120)
    return pods


def replace(runner: PodRunner, pods: list[Pod], old: Pod, *, kill: bool = False) -> Pod:
    """Delete a pod (gracefully, or SIGKILL) and start its replacement: new address, empty data."""
    (runner.kill if kill else runner.stop)(old)
    runner.forget_claims(old.name)
    new = start_pod(runner, old.name)
    pods[pods.index(old)] = new
    return new


def ready(pod: Pod) -> bool:
    """The pod's readiness probe, as the kubelet runs it."""
    return pod.exec("sh", "/scripts/node.sh", "ready").returncode == 0


def role_of(pods: list[Pod], role: str) -> Pod:
    for pod in pods:
        if f"role:{role}" in cli(pod, "info", "replication"):
            return pod
    raise AssertionError(f"no {role}")


def test_three_masters_three_replicas_form_heal_and_fail_over():
    runner = redis_pods()
    try:
        t0 = time.monotonic()
        pods = start_all(runner, 3, 1)
        formed = time.monotonic() - t0
        wait_healthy(pods, 3, 1)
        print(f"6 pods ready, cluster formed in {formed:.1f} s")
        # Keys on every master, read back later through whichever node serves them.
        keys = write_keys(pods[0])

        # A replica deleted, back empty with a new address: it takes its old self's place.
        replica = role_of(pods, "slave")
        new = replace(runner, pods, replica)
        assert new.ip != replica.ip
        runner.wait_ready(new)
        print(f"replica {replica.name} replaced: healthy in {wait_healthy(pods, 3, 1):.1f} s")

        # A master deleted gracefully: preStop hands its slots over first, nothing is lost.
        master = role_of(pods, "master")
        new = replace(runner, pods, master)
        runner.wait_ready(new)
        print(f"master {master.name} replaced gracefully: healthy in "
              f"{wait_healthy(pods, 3, 1):.1f} s")
        assert "role:slave" in cli(new, "info", "replication"), "the new pod replicates"
        missing = [k for k in keys if cli(pods[0], "-c", "get", k).strip() != k]
        assert not missing, f"writes lost across a graceful master restart: {missing}"

        # A master killed: its replica takes over after cluster-node-timeout (5 s).
        master = role_of(pods, "master")
        others = [p for p in pods if p is not master]
        killed_at = time.monotonic()
        runner.kill(master)
        while "cluster_state:ok" not in cli(others[0], "cluster", "info") or any(
                slot_count(n) and "fail" in n["flags"] for n in nodes(others[0])):
            assert time.monotonic() - killed_at < 30, nodes(others[0])
            time.sleep(0.2)
        # Served again: every key readable (a write after the last sync may be lost; none here).
        while any(cli(others[0], "-c", "get", k).strip() != k for k in keys[:5]):
            assert time.monotonic() - killed_at < 30
            time.sleep(0.2)
        failover_s = time.monotonic() - killed_at
        print(f"master {master.name} killed: served again after {failover_s:.1f} s")
        assert failover_s < 20  # node timeout 5 s + election; more on a loaded machine
        runner.forget_claims(master.name)
        new = start_pod(runner, master.name)
        pods[pods.index(master)] = new
        runner.wait_ready(new)
        print(f"its pod back: healthy in {wait_healthy(pods, 3, 1):.1f} s")
        stopped = [p for p in runner.stopped if p.exit_code is not None]
        assert all(p.exit_code in (0, 137) for p in stopped), [
            (p.name, p.exit_code, p.last_logs) for p in stopped]
    finally:
        runner.remove_all()
        runner.cluster.remove()


def test_most_masters_lost_at_once_their_replicas_take_over():
    # Two of three masters gone together (their node lost, after drains gathered them there):
    # no majority is left to agree they failed or to elect, so the replicas take over alone.
    runner = redis_pods()
    try:
        pods = start_all(runner, 3, 1)
        wait_healthy(pods, 3, 1)
        keys = write_keys(pods[0])
        masters = [p for p in pods if "role:master" in cli(p, "info", "replication")][:2]
        survivors = [p for p in pods if p not in masters]
        lost_at = time.monotonic()
        for master in masters:
            runner.kill(master)
        while any(cli(survivors[0], "-c", "get", k).strip() != k for k in keys):
            assert time.monotonic() - lost_at < 60, [cli(p, "cluster", "nodes") for p in survivors]
            time.sleep(1)
        took = time.monotonic() - lost_at
        print(f"2 of 3 masters killed: every key served again after {took:.1f} s")
        assert any("CLUSTER FAILOVER TAKEOVER" in p.logs() for p in survivors)
        for master in masters:
            runner.forget_claims(master.name)
            pods[pods.index(master)] = start_pod(runner, master.name)
        for pod in pods:
            runner.wait_ready(pod, timeout=120)
        print(f"their pods back: healthy in {wait_healthy(pods, 3, 1):.1f} s")
    finally:
        runner.remove_all()
        runner.cluster.remove()


def test_a_master_back_at_once_without_its_data_hands_its_slots_over_first():
    # A claim keeps nodes.conf; no RDB/AOF by default, so the node comes back with nothing to
    # load, well inside the 5 s node timeout: as a master, its replica would copy it empty.
    runner = redis_pods("redis.persistence.enabled=true")
    try:
        pods = start_all(runner, 3, 1)
        wait_healthy(pods, 3, 1)
        # A snapshot older than the data, as a replica's full resync leaves one on its claim:
        # persistence is off, so it is not the node's data and must not come back as it.
        for pod in pods:
            assert cli(pod, "save").strip() == "OK"
        keys = write_keys(pods[0])
        master = role_of(pods, "master")
        runner.kill(master)
        back = start_pod(runner, master.name)  # the same claim: nodes.conf kept, no data
        pods[pods.index(master)] = back
        runner.wait_ready(back)
        print(f"master {master.name} killed and back at once: healthy in "
              f"{wait_healthy(pods, 3, 1):.1f} s")
        missing = [k for k in keys if cli(pods[0], "-c", "get", k).strip() != k]
        assert not missing, f"keys lost when a master came back empty: {missing}"
        assert "role:slave" in cli(back, "info", "replication"), "back as a replica"
        assert "took my slots over; starting as its replica" in back.logs(), back.logs()[-1500:]
        assert "removing dump.rdb" in back.logs(), back.logs()[-1500:]
    finally:
        runner.remove_all()
        runner.cluster.remove()


def test_masters_form_the_cluster_before_their_replicas_come():
    runner = redis_pods()
    try:
        pods = start_all(runner, 3, 1, ordinals=range(1))
        wait_healthy(pods, 3, 0)
        pods += start_all(runner, 3, 1, ordinals=range(1, 2))
        took = wait_healthy(pods, 3, 1)
        print(f"replicas started after the masters: in their shards in {took:.1f} s")
    finally:
        runner.remove_all()
        runner.cluster.remove()


def test_without_replicas_a_shard_out_leaves_the_others_serving_and_its_master_comes_back():
    runner = redis_pods("redis.cluster.replicasPerMaster=0")
    try:
        pods = start_all(runner, 3, 0)
        wait_healthy(pods, 3, 0)
        # Shard 1 out: keys of shards 0 and 2 still served, their pods still ready.
        keys = write_keys(pods[0])
        lost = pods[1]
        mine = myself(lost)
        runner.kill(lost)
        others = [pods[0], pods[2]]
        failed = wait_failed(others[0], mine["id"])
        assert [n["id"] for n in failed] == [mine["id"]], nodes(others[0])
        assert all(ready(p) for p in others), [cli(p, "cluster", "info") for p in others]
        served = [k for k in keys if int(cli(others[0], "cluster", "keyslot", k)) not in
                  slot_range(mine)]
        assert served and all(cli(others[0], "-c", "get", k).strip() == k for k in served)
        runner.forget_claims(lost.name)
        new = start_pod(runner, lost.name)
        pods[1] = new
        runner.wait_ready(new, timeout=120)
        took = wait_healthy(pods, 3, 0)
        print(f"master {new.name} replaced without a replica: healthy in {took:.1f} s")
        assert slot_count(myself(new)) == pytest.approx(SLOTS / 3, abs=1)
    finally:
        runner.remove_all()
        runner.cluster.remove()


def test_one_master_alone_restarts_alone():
    runner = redis_pods("redis.cluster.masters=1", "redis.cluster.replicasPerMaster=0")
    try:
        pods = start_all(runner, 1, 0)
        wait_healthy(pods, 1, 0)
        new = replace(runner, pods, pods[0])
        runner.wait_ready(new)
        wait_healthy(pods, 1, 0)
        assert re.search(r"cluster_slots_ok:16384", cli(new, "cluster", "info"))
    finally:
        runner.remove_all()
        runner.cluster.remove()
