"""make e2e-k8s: the chart on the local Kubernetes, as a user installs and runs it.

scripts/k8s/e2e.sh brings the cluster up, imports the images and runs this module inside the
cluster's network namespace with the cluster DNS as resolver (E2E_K8S=1); under a plain pytest
run it is skipped. One release for the whole module; the tests run in file order:

install (namespace enforcing the `restricted` Pod Security Standard) -> helm test -> the shared
scenarios (tests/e2e/scenarios.py) through the interface Service by its DNS name, as a signed-in
user -> Redis shards apart -> Redis failover -> a Redis container restart -> pod security of
the running pods -> a node drained and a node lost under load (nodes.py; three nodes) -> helm
upgrade -> rollback -> uninstall. Each test stores its field of the `k8s-e2e:` line
(conftest.RESULTS).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from channels_fleet.layers.keys import group_key, slot_of

from .. import scenarios
from ..kube_stack import KubeStack
from . import nodes
from .conftest import RESULTS, phase
from .release import (
    APP_COMPONENTS,
    Release,
    component,
    is_ready,
    redis_cli,
    shard_placement,
    sign_in,
)

pytestmark = [
    pytest.mark.skipif(not os.environ.get("E2E_K8S"),
                       reason="needs the local cluster: run make e2e-k8s"),
    pytest.mark.timeout(1800),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def release() -> Release:
    return Release.from_env()


def test_install__every_pod_ready(release: Release) -> None:
    if not release.kubectl("get", "namespace", release.namespace, "--ignore-not-found",
                           "-o", "name"):
        release.kubectl("create", "namespace", release.namespace)
    # The strictest built-in policy: the API server refuses any pod of the release that runs as
    # root, keeps a capability, allows privilege escalation or runs without seccomp.
    release.kubectl("label", "namespace", release.namespace,
                    "pod-security.kubernetes.io/enforce=restricted")
    with phase("install"):
        release.install()
    RESULTS["install"] = "ok"
    nodes = json.loads(release.kubectl("get", "nodes", "-o", "json"))["items"]
    RESULTS["nodes"] = len(nodes)
    pods = [p for p in release.pods() if p["status"].get("phase") != "Succeeded"]
    ready = [p for p in pods if is_ready(p)]
    RESULTS["pods_ready"] = f"{len(ready)}/{len(pods)}"
    print(release.kubectl("get", "pods", "-o", "wide"))
    assert pods and len(ready) == len(pods), RESULTS["pods_ready"]
    # The app pods wait for the Redis Cluster to form (wait-for-redis) and for the migrations
    # instead of failing and restarting until they are there.
    restarts = release.restarts()
    RESULTS["install_restarts"] = sum(restarts.values())
    assert not any(restarts.values()), f"app pods restarted during the install: {restarts}"


def test_helm_test(release: Release) -> None:
    with phase("helm_test"):
        print(release.helm("test", release.name, "--logs", "--timeout", "5m"))
    RESULTS["helm_test"] = "ok"


@pytest.fixture(scope="module")
def stack(release: Release) -> KubeStack:
    """The scenarios' client: the interface Service by its DNS name, signed in as alice on the
    web tier (users made as an operator would, `manage.py demo_users` in a web pod)."""
    web = next(p["metadata"]["name"] for p in release.app_pods() if component(p) == "web")
    release.exec(web, "python3", "manage.py", "demo_users")
    web_url = f"http://{release.service_host('web')}:{release.service_port('web')}"
    session = sign_in(web_url, "alice")
    return KubeStack(
        base_url=f"http://{release.service_host('interface')}:{release.service_port('interface')}",
        namespace=release.namespace, release=release.name, kubectl=release.kubectl_bin,
        chat=scenarios.ChatProtocol(headers=(("Cookie", f"sessionid={session}"),)))


def record(name: str, result: dict) -> None:
    """The scenario's field of the k8s-e2e line."""
    if name == "scenario_chat_round_trip":
        RESULTS["chat_websocket"] = "ok"
    elif name == "scenario_long_poll_round_trip" and RESULTS.get("chat_websocket") == "ok":
        RESULTS["chat"] = "ok"
    elif name == "scenario_worker_rollout":
        RESULTS["worker_rollout_disconnects"] = result["closed"]
    elif name == "scenario_interface_rollout":
        per_client = result["disconnects_per_client"]
        low, high = per_client["min"], per_client["max"]
        spread = low if low == high else f"{low}-{high}"
        RESULTS["interface_rollout_disconnects_per_client"] = spread
    elif name == "scenario_worker_kill_under_load":
        RESULTS["pod_kill_collateral_lost"] = result["collateral_lost"]


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda s: s.__name__)
async def test_scenario(stack: KubeStack, scenario) -> None:
    name = scenario.__name__
    with phase(name.removeprefix("scenario_")):
        result = await scenario(stack)
    print(f"\n{name}: {result}")
    record(name, result)
    if name == "scenario_interface_rollout":
        per_client = result["disconnects_per_client"]
        assert per_client["max"] == 1, (
            f"an interface rollout disconnected a client {per_client['max']} times (expected 1: "
            f"surge new pods first, then drain the old ones)")


# The demo's channel layer prefix (examples/chat settings) and a room's group (chat/rooms.py):
# the Redis key a room's broadcast starts from, `chat:g:{chat_<room>}` (channels_fleet.layers).
DEMO_LAYER_PREFIX, DEMO_GROUP = "chat", "chat_{room}"


def master_of(release: Release, key: str) -> str:
    """The Redis pod that is master of the key's slot, from CLUSTER NODES (by pod IP)."""
    pods = [p for p in release.pods("app.kubernetes.io/component=redis") if is_ready(p)]
    if not pods:
        pytest.skip("the release runs no Redis of its own (redis.external)")
    slot = slot_of(key)
    by_ip = {p["status"]["podIP"]: p["metadata"]["name"] for p in pods}
    for line in redis_cli(release, pods[0]["metadata"]["name"], "cluster", "nodes").splitlines():
        fields = line.split()
        if "master" not in fields[2] or "fail" in fields[2]:
            continue
        for owned in fields[8:]:
            first, _, last = owned.partition("-")
            if first.isdigit() and int(first) <= slot <= int(last or first):
                return by_ip[fields[1].split(":")[0]]
    raise AssertionError(f"no master serves slot {slot}")


def test_redis_shards_apart__no_shard_has_two_pods_on_one_node(release: Release) -> None:
    """The built-in cluster's shards, as it runs: a master and its replicas on distinct nodes
    (the chart's per-shard anti-affinity), so one lost node takes at most one copy of each."""
    if not release.pods("app.kubernetes.io/component=redis"):
        pytest.skip("the release runs no Redis of its own (redis.external)")
    placement = shard_placement(release)
    print(f"shards (master pod -> nodes of its copies): {placement}")
    apart = [m for m, nodes in placement.items() if len(set(nodes)) == len(nodes)]
    RESULTS["shards_apart"] = f"{len(apart)}/{len(placement)}"
    assert len(apart) == len(placement), placement
    copies = 1 + int(release.computed_values()["redis"]["cluster"]["replicasPerMaster"])
    assert all(len(nodes) == copies for nodes in placement.values()), placement


async def test_redis_failover__served_again_within_10s(release: Release, stack: KubeStack
                                                       ) -> None:
    """Kill the Redis master of a room's group key: the room works again within 10 s (its
    replica took over), and no app pod restarted."""
    room = scenarios.unique("failover")
    key = group_key(DEMO_LAYER_PREFIX, DEMO_GROUP.format(room=room))
    victim = master_of(release, key)
    restarts = release.restarts()
    clients = await scenarios.open_clients(stack, room, 4)
    try:
        with phase("redis_failover"):
            t0 = time.perf_counter()
            release.kubectl("delete", "pod", victim, "--grace-period=0", "--force", "--wait=false")

            async def served() -> bool:
                for client in clients:
                    if client.closed.is_set():
                        await client.reopen()
                try:
                    await scenarios.broadcast_reaches_all(clients, timeout=2)
                except AssertionError as exc:
                    print(f"not served yet at {time.perf_counter() - t0:.1f} s: {exc}")
                    return False
                return True

            await asyncio.sleep(0.5)
            ok = await scenarios.eventually(served, 60, 0.25)
            failover_s = round(time.perf_counter() - t0, 1)
        RESULTS["failover_s"] = failover_s
        assert ok, f"the room did not work again within 60 s of killing {victim}"
        assert failover_s <= 10, f"served again only after {failover_s} s (expected <= 10)"
        after = release.restarts()
        restarted = {pod: n for pod, n in after.items() if n > restarts.get(pod, 0)}
        assert not restarted, f"app pods restarted during the failover: {restarted}"
        print(f"killed {victim}, master of {key}: served again after {failover_s} s")
    finally:
        await scenarios.close_all(clients)


# SIGKILL the server inside the Valkey container (as the kernel's OOM killer would): node.sh
# exits with it and the kubelet restarts the container on the same emptyDir.
KILL_SERVER = ('for p in /proc/[0-9]*; do case "$(cat "$p/comm" 2>/dev/null)" in '
               'valkey-server|redis-server) kill -9 "${p#/proc/}";; esac; done')


def get_pod(release: Release, name: str) -> dict:
    return json.loads(release.kubectl("get", "pod", name, "-o", "json"))


def valkey_restarts(pod: dict) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", [])
               if c["name"] == "valkey")


async def test_redis_container_restart__memberships_kept(release: Release, stack: KubeStack
                                                         ) -> None:
    """The Redis master of a room's group key crashes and its container restarts at once with
    its nodes.conf but no data: its replica takes the slots over before it serves again, so the
    room's group memberships survive and the clients, never reconnected, still get broadcasts.
    (Back as the master, empty, it would have its replica copy the emptiness.)"""
    ok = await scenarios.eventually(lambda: asyncio.to_thread(
        lambda: all(is_ready(p) for p in release.pods("app.kubernetes.io/component=redis"))), 120)
    assert ok, "the Redis pods were not ready again after the failover test"
    room = scenarios.unique("restart")
    key = group_key(DEMO_LAYER_PREFIX, DEMO_GROUP.format(room=room))
    victim = master_of(release, key)
    before = valkey_restarts(get_pod(release, victim))
    clients = await scenarios.open_clients(stack, room, 4)
    try:
        with phase("redis_container_restart"):
            t0 = time.perf_counter()
            # The exec may die with the container it runs in (137): the restart count tells.
            release.exec(victim, "sh", "-c", KILL_SERVER, check=False)

            async def back() -> bool:
                pod = await asyncio.to_thread(get_pod, release, victim)
                return valkey_restarts(pod) > before and is_ready(pod)

            ok = await scenarios.eventually(back, 120, 1)
            back_s = round(time.perf_counter() - t0, 1)
        assert ok, f"{victim}'s Valkey container did not restart and turn ready in 120 s"
        logs = release.kubectl("logs", victim, "-c", "valkey")
        closed = [c for c in clients if c.closed.is_set()]
        assert not closed, f"{len(closed)} clients were disconnected"
        try:
            took = await scenarios.room_works_for_all(clients, within=20)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {victim}'s log:\n{logs[-3000:]}") from None
        assert "took my slots over; starting as its replica" in logs, logs[-3000:]
        RESULTS["redis_restart_s"] = back_s
        print(f"{victim} (master of {key}) restarted in place: ready after {back_s} s, the room "
              f"reached everyone {took:.1f} s later")
    finally:
        await scenarios.close_all(clients)


def test_pod_security__running_pods(release: Release) -> None:
    """Each running app container: uid 10001, read-only root, no capabilities, seccomp filter."""
    checked = []
    with phase("pod_security"):
        for pod in release.app_pods():
            name = pod["metadata"]["name"]
            status = release.exec(name, "cat", "/proc/1/status")
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            uids = fields["Uid"].split()
            assert set(uids) == {"10001"}, f"{name} runs as uid {uids}"
            for cap in ("CapPrm", "CapEff", "CapBnd", "CapAmb"):
                assert int(fields[cap], 16) == 0, f"{name} keeps capabilities: {cap}={fields[cap]}"
            assert fields["NoNewPrivs"].strip() == "1", f"{name} may gain privileges"
            assert fields["Seccomp"].strip() == "2", f"{name} runs without a seccomp filter"
            wrote = release.exec(name, "sh", "-c", "touch /probe 2>&1 || echo refused",
                                 check=False)
            assert "refused" in wrote or "Read-only" in wrote, f"{name}: root filesystem writable"
            checked.append(name)
    assert {component(p) for p in release.app_pods()} == set(APP_COMPONENTS)
    RESULTS["pod_security"] = "ok"
    print(f"checked {len(checked)} pods: {checked}")


# --- nodes (tests/e2e/k8s/nodes.py): on a cluster of one node there is nothing to drain or lose


#: Interface and worker replicas before the node scenarios, put back after them.
REPLICAS_BEFORE_NODES: dict[str, int] = {}


async def test_node_drain__budgets_honoured_nothing_lost(release: Release, stack: KubeStack
                                                         ) -> None:
    if len(nodes.nodes(release)) < 3:
        pytest.skip("the node scenarios need three nodes (make k8s-up K8S_NODES=3)")
    # An interface and a worker on every node (spread by the chart's topology constraints).
    for name in ("interface", "worker"):
        REPLICAS_BEFORE_NODES[name] = int(release.kubectl(
            "get", f"deployment/{release.fullname}-{name}", "-o", "jsonpath={.spec.replicas}"))
        nodes.scale(release, name, 3)
    figures: dict = {}
    try:
        with phase("node_drain"):
            await nodes.drain_under_load(release, stack, figures)
    finally:
        RESULTS["drain_s"] = figures.get("drain_s", "FAIL")
        RESULTS["drain_lost"] = figures.get("lost", "FAIL")


async def test_node_loss__served_again_then_full_strength(release: Release, stack: KubeStack
                                                          ) -> None:
    if len(nodes.nodes(release)) < 3:
        pytest.skip("the node scenarios need three nodes (make k8s-up K8S_NODES=3)")
    try:
        with phase("node_loss"):
            result = await nodes.node_loss_under_load(release, stack)
    finally:
        for name, count in REPLICAS_BEFORE_NODES.items():
            nodes.scale(release, name, count)
    RESULTS["node_loss_serve_s"] = result["serve_s"]
    RESULTS["node_loss_lost"] = result["lost"]


def pod_uids(release: Release) -> set[str]:
    return {p["metadata"]["uid"] for p in release.app_pods()}


def revision(release: Release) -> int:
    return int(json.loads(release.helm("status", release.name, "-o", "json"))["version"])


# The scenarios scaled the workers with `kubectl scale`, which owns the Deployment's replicas
# now; Helm 4 applies server-side and refuses to take a field another manager set, as it would
# after any operator's hand scaling. --force-conflicts is what that operator passes.
FORCE = "--force-conflicts"


async def test_helm_upgrade__pods_roll(release: Release, stack: KubeStack) -> None:
    """A changed value rolls every app pod; the release works on the new ones."""
    before, installed = pod_uids(release), revision(release)
    with phase("upgrade"):
        await asyncio.to_thread(
            release.helm, "upgrade", release.name, release.chart, "--values", release.values,
            "--set", "config.drainTimeout=20", FORCE, "--wait", "--timeout", "10m")
    assert revision(release) == installed + 1
    assert not before & pod_uids(release), "some app pods were not replaced by the upgrade"
    await scenarios.scenario_chat_round_trip(stack)
    RESULTS["upgrade"] = "ok"


async def test_helm_rollback__pods_roll_back(release: Release, stack: KubeStack) -> None:
    before, upgraded = pod_uids(release), revision(release)
    with phase("rollback"):
        await asyncio.to_thread(release.helm, "rollback", release.name, str(upgraded - 1), FORCE,
                                "--wait", "--timeout", "10m")
    assert revision(release) == upgraded + 1
    assert not before & pod_uids(release), "some app pods were not replaced by the rollback"
    env = json.loads(release.kubectl("get", "deployment", f"{release.fullname}-worker", "-o",
                                     "jsonpath={.spec.template.spec.containers[0].env}"))
    drain = {e["name"]: e.get("value") for e in env}.get("CHANNELS_FLEET_DRAIN_TIMEOUT")
    assert drain != "20", "the rollback kept the upgraded value"
    await scenarios.scenario_chat_round_trip(stack)
    RESULTS["rollback"] = "ok"


def namespaced_objects(release: Release) -> list[str]:
    """Every object left in the namespace but what Kubernetes itself puts in each namespace."""
    kinds = release.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    names = release.kubectl("get", ",".join(kinds), "-o", "name", "--ignore-not-found").split()
    own = {"configmap/kube-root-ca.crt", "serviceaccount/default"}
    return [n for n in names if n not in own]


def test_helm_uninstall__leaves_nothing(release: Release) -> None:
    with phase("uninstall"):
        release.helm("uninstall", release.name, "--wait", "--timeout", "5m")
        deadline = time.monotonic() + 120
        while (left := namespaced_objects(release)) and time.monotonic() < deadline:
            time.sleep(1)
    volumes = json.loads(release.kubectl("get", "pv", "-o", "json"))["items"]
    left += [f"persistentvolume/{v['metadata']['name']}" for v in volumes
             if v["spec"].get("claimRef", {}).get("namespace") == release.namespace]
    RESULTS["uninstall_left"] = len(left)
    assert not left, f"helm uninstall left {left}"
    release.kubectl("delete", "namespace", release.namespace, "--wait=true")
