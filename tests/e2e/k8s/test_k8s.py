"""make e2e-k8s: the chart on the local Kubernetes, as a user installs and runs it.

scripts/k8s/e2e.sh brings the cluster up, imports the images and runs this module inside the
cluster's network namespace with the cluster DNS as resolver (E2E_K8S=1); under a plain pytest
run it is skipped. One release for the whole module; the tests run in file order:

install (namespace enforcing the `restricted` Pod Security Standard; the Valkey and PostgreSQL
versions that run) -> helm test -> a changed Redis shard layout refused (redis_day2.py) -> the
shared scenarios (tests/e2e/scenarios.py) through the
interface Service by its DNS name, as a signed-in user -> the interfaces rolled under resumable
clients (resume_rollout.py) -> Redis shards apart -> a Redis master's
pod deleted (hand-over) -> crashes under load (SIGKILL in the container: a Valkey master, a
worker, an interface; crashes.py) -> pod security of the running pods -> a node drained and a
node lost under load (nodes.py; three nodes) -> helm upgrade rolling every pod under load ->
rollback -> the Redis role users turned on by an upgrade (redis_day2.py) -> uninstall (leaving
only the generated Secrets) -> a fresh release with TLS only and the role users (redis_day2.py).
Each test stores its field of the `k8s-e2e:` line (conftest.RESULTS).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time

import pytest
from websockets.exceptions import ConnectionClosed

from channels_fleet.layers.keys import group_key

from .. import scenarios
from ..kube_stack import KubeStack
from . import crashes, nodes, redis_day2, resume_rollout
from .conftest import RESULTS, phase
from .release import (
    APP_COMPONENTS,
    Release,
    component,
    is_ready,
    master_pod_of,
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
    assert not any(restarts.values()), (
        f"app pods restarted during the install: {restarts}\n{release.why_restarted()}")
    RESULTS.update(server_versions(release))


def server_versions(release: Release) -> dict[str, str]:
    """What the release's own Valkey and PostgreSQL servers say they run."""
    versions = {}
    redis = [p for p in release.pods("app.kubernetes.io/component=redis") if is_ready(p)]
    if redis:
        info = dict(line.split(":", 1) for line in redis_cli(
            release, redis[0]["metadata"]["name"], "info", "server").splitlines() if ":" in line)
        versions["valkey"] = info.get("valkey_version", f"redis-{info['redis_version']}").strip()
    postgresql = release.pods("app.kubernetes.io/component=postgresql")
    if postgresql:
        versions["postgres"] = release.exec(
            postgresql[0]["metadata"]["name"], "sh", "-c",
            'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U "$POSTGRES_USER" '
            '-d "$POSTGRES_DB" -tAc "SHOW server_version"').split()[0]
    return versions


def test_helm_test(release: Release) -> None:
    with phase("helm_test"):
        print(release.helm("test", release.name, "--logs", "--timeout", "5m"))
    RESULTS["helm_test"] = "ok"


def test_redis_layout_change__refused_by_helm_upgrade(release: Release) -> None:
    redis_day2.refuse_layout_change(release)
    RESULTS["layout_refused"] = "ok"


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
    """The scenario's fields of the k8s-e2e line. A scenario that failed a check after measuring
    (scenarios.ScenarioFailure) is recorded too: its counts show why."""
    if name == "scenario_chat_round_trip":
        RESULTS["chat_websocket"] = "ok"
    elif name == "scenario_long_poll_round_trip" and RESULTS.get("chat_websocket") == "ok":
        RESULTS["chat"] = "ok"
    elif name == "scenario_worker_rollout":
        RESULTS["worker_rollout_disconnects"] = result["closed"]
        RESULTS["worker_rollout_missed_in_rehome_window"] = result["missed_in_rehome_window"]
    elif name == "scenario_worker_loss":
        RESULTS["worker_stop_missed_in_rehome_window"] = result["missed_in_rehome_window"]
    elif name == "scenario_interface_rollout":
        per_client = result["disconnects_per_client"]
        low, high = per_client["min"], per_client["max"]
        spread = low if low == high else f"{low}-{high}"
        RESULTS["interface_rollout_disconnects_per_client"] = spread
    elif name == "scenario_worker_kill_under_load":
        RESULTS["pod_kill_collateral_lost"] = result["collateral_lost"]
        RESULTS["pod_kill_missed_in_rehome_window"] = result["missed_in_rehome_window"]


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda s: s.__name__)
async def test_scenario(stack: KubeStack, scenario) -> None:
    name = scenario.__name__
    try:
        with phase(name.removeprefix("scenario_")):
            result = await scenario(stack)
    except scenarios.ScenarioFailure as failure:
        record(name, failure.result)
        raise
    print(f"\n{name}: {result}")
    record(name, result)
    if name == "scenario_interface_rollout":
        per_client = result["disconnects_per_client"]
        assert per_client["max"] == 1, (
            f"an interface rollout disconnected a client {per_client['max']} times (expected 1: "
            f"surge new pods first, then drain the old ones)")


async def test_interface_rollout__resumable_clients_keep_their_consumers(stack: KubeStack
                                                                        ) -> None:
    """The interfaces roll under resumable members of a room (resume_rollout.py): the app sees
    no disconnect, and no member misses or gets twice a message posted meanwhile."""
    result: dict = {}
    try:
        with phase("interface_rollout_resumable"):
            await resume_rollout.interface_rollout_resumable(stack, result)
    finally:
        print(f"\ninterface rollout, resumable clients: {result}")
        RESULTS["interface_rollout_app_disconnects"] = result.get("app_disconnects", "FAIL")
        RESULTS["interface_rollout_lost"] = result.get("lost", "FAIL")
        RESULTS["interface_rollout_duplicated"] = result.get("duplicated", "FAIL")
    assert result["app_disconnects"] == 0, f"the app saw members leave: {result}"
    assert result["lost"] == 0 and result["duplicated"] == 0, result
    assert result["out_of_order"] == 0 and not result["sessions_ended_for_good"], result


# The demo's channel layer prefix (examples/chat settings) and a room's group (chat/rooms.py):
# the Redis key a room's broadcast starts from, `chat:g:{chat_<room>}` (channels_fleet.layers).
DEMO_LAYER_PREFIX, DEMO_GROUP = "chat", "chat_{room}"


def master_of(release: Release, key: str) -> str:
    """The Redis pod that is master of the key's slot (skips when the release has no Redis)."""
    if not release.pods("app.kubernetes.io/component=redis"):
        pytest.skip("the release runs no Redis of its own (redis.external)")
    return master_pod_of(release, key)


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


async def test_redis_handover__served_again_within_10s(release: Release, stack: KubeStack
                                                       ) -> None:
    """Force-delete the Redis pod that is master of a room's group key (its preStop still hands
    the slots to its replica): the room works again within 10 s, and no app pod restarted."""
    room = scenarios.unique("failover")
    key = group_key(DEMO_LAYER_PREFIX, DEMO_GROUP.format(room=room))
    victim = master_of(release, key)
    restarts = release.restarts()
    clients = await scenarios.open_clients(stack, room, 4)
    try:
        with phase("redis_handover"):
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
            handover_s = round(time.perf_counter() - t0, 1)
        RESULTS["handover_s"] = handover_s
        assert ok, f"the room did not work again within 60 s of deleting {victim}"
        assert handover_s <= 10, f"served again only after {handover_s} s (expected <= 10)"
        after = release.restarts()
        restarted = {pod: n for pod, n in after.items() if n > restarts.get(pod, 0)}
        assert not restarted, f"app pods restarted during the failover: {restarted}"
        print(f"deleted {victim}, master of {key}: served again after {handover_s} s")
    finally:
        await scenarios.close_all(clients)


# SIGKILL the server inside the Valkey container (as the kernel's OOM killer would; no preStop
# runs): node.sh exits with it and the kubelet restarts the container on the same emptyDir.
KILL_SERVER = ('for p in /proc/[0-9]*; do case "$(cat "$p/comm" 2>/dev/null)" in '
               'valkey-server|redis-server) kill -9 "${p#/proc/}";; esac; done')
CRASH_FAILOVER_GOAL = 15.0


def get_pod(release: Release, name: str) -> dict:
    return json.loads(release.kubectl("get", "pod", name, "-o", "json"))


def valkey_restarts(pod: dict) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", [])
               if c["name"] == "valkey")


async def room_served_again(stack: KubeStack, room: str, members: list[scenarios.ChatClient],
                            t0: float, timeout: float = 60) -> float:
    """Seconds from t0 until a message posted to `room` (by a client of its own, reconnecting
    if its consumer failed) reached every one of `members` within 2 s."""
    sender = await scenarios.ChatClient(stack, room).open()
    try:
        for n in range(10_000):
            if time.monotonic() - t0 > timeout:
                break
            if sender.closed.is_set():
                await sender.reopen(timeout=30)
            text = f"{room}-probe{n}"
            try:
                await sender.say(text)
            except ConnectionClosed:
                continue
            if all(await asyncio.gather(*(m.wait_for(text, 2) for m in members))):
                return time.monotonic() - t0
            await asyncio.sleep(0.2)
        return math.inf
    finally:
        await sender.close()


async def test_valkey_master_crash__served_again_memberships_kept(release: Release,
                                                                  stack: KubeStack) -> None:
    """SIGKILL of the Valkey server that is master of a room's group key, under the load of the
    node scenarios (nodes.Load). Its container restarts at once with its nodes.conf but no
    data: its replica takes the slots over before it serves again, so the room's group
    memberships survive and its members, never reconnected, get its messages again.
    `crash_failover_s`: from the kill until the room reached every member and every prober was
    answered again (goal <= 15 s); `crash_lost`: requests lost silently (none may be);
    `redis_restart_s`: until the container is back and ready."""
    ok = await scenarios.eventually(lambda: asyncio.to_thread(
        lambda: all(is_ready(p) for p in release.pods("app.kubernetes.io/component=redis"))), 120)
    assert ok, "the Redis pods were not ready again after the hand-over test"
    room = scenarios.unique("crash")
    key = group_key(DEMO_LAYER_PREFIX, DEMO_GROUP.format(room=room))
    victim = master_of(release, key)
    before = valkey_restarts(get_pod(release, victim))
    clients = await scenarios.open_clients(stack, room, 4)
    load = nodes.Load(stack)
    await load.start()
    try:
        with phase("valkey_master_crash"):
            # The exec may die with the container it runs in (137): the restart count tells.
            await asyncio.to_thread(release.exec, victim, "sh", "-c", KILL_SERVER, check=False)
            t0 = time.monotonic()  # the kill is in: the exec that sent it has returned
            room_s = await room_served_again(stack, room, clients, t0)
            probers_s = await crashes.wait_served(load.probers, t0, 60)

            async def back() -> bool:
                pod = await asyncio.to_thread(get_pod, release, victim)
                return valkey_restarts(pod) > before and is_ready(pod)

            ok = await scenarios.eventually(back, 120, 1)
            back_s = round(time.monotonic() - t0, 1)
            await asyncio.sleep(3)
            await load.stop()
        figures = load.figures()
        crash_failover_s = round(max(room_s, probers_s), 1)
        RESULTS["crash_failover_s"] = crash_failover_s
        RESULTS["crash_lost"] = figures["lost"]
        print(f"valkey master crash: {victim} (master of {key}) room_served_s={room_s:.1f} "
              f"probers_served_s={probers_s:.1f} ready_s={back_s} {figures}")
        assert ok, f"{victim}'s Valkey container did not restart and turn ready in 120 s"
        logs = release.kubectl("logs", victim, "-c", "valkey")
        closed = [c.close_code for c in clients if c.closed.is_set()]
        assert not closed, f"room members were disconnected: {closed}"
        assert "took my slots over; starting as its replica" in logs, logs[-3000:]
        assert figures["lost"] == 0, f"requests lost silently in the crash: {figures}"
        assert crash_failover_s <= CRASH_FAILOVER_GOAL, (
            f"served again only {crash_failover_s} s after the crash (room {room_s:.1f} s, "
            f"probers {probers_s:.1f} s; goal {CRASH_FAILOVER_GOAL:.0f}); {victim}'s log:\n"
            f"{logs[-3000:]}")
        RESULTS["redis_restart_s"] = back_s
    finally:
        await load.close()
        await scenarios.close_all(clients)


async def test_worker_crash__rehomed_nothing_lost(release: Release, stack: KubeStack) -> None:
    result: dict = {}
    try:
        with phase("worker_crash"):
            await crashes.worker_crash_under_load(release, stack, result)
    finally:
        RESULTS["worker_crash_lost_silently"] = result.get("lost_silently", "FAIL")
        RESULTS["worker_crash_collateral_lost"] = result.get("collateral_lost", "FAIL")
        RESULTS["worker_crash_missed_in_rehome_window"] = result.get("missed_in_rehome_window",
                                                                     "FAIL")


async def test_interface_crash__clients_back_disconnects_handled(release: Release,
                                                                 stack: KubeStack) -> None:
    result: dict = {}
    try:
        with phase("interface_crash"):
            await crashes.interface_crash_under_load(release, stack, result)
    finally:
        RESULTS["interface_crash_recovered_s"] = result.get("recovered_s", "FAIL")


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
    """Every running pod of the release: the app's, Redis's and PostgreSQL's."""
    return {p["metadata"]["uid"] for p in release.pods()
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")}


def old_pods_gone(release: Release, timeout: float = 300) -> None:
    """Until no pod of the release is terminating: `helm --wait` returns once the new pods are
    ready, while old interfaces may still drain (closing their sockets with 1001) and stay in
    the Service's endpoints for a moment, so a new client could land on one."""
    deadline = time.monotonic() + timeout
    while terminating := [p["metadata"]["name"] for p in release.pods()
                          if p["metadata"].get("deletionTimestamp")]:
        assert time.monotonic() < deadline, f"pods still terminating: {terminating}"
        time.sleep(1)


def revision(release: Release) -> int:
    return int(json.loads(release.helm("status", release.name, "-o", "json"))["version"])


# The scenarios scaled the workers with `kubectl scale`, which owns the Deployment's replicas
# now; Helm 4 applies server-side and refuses to take a field another manager set, as it would
# after any operator's hand scaling. --force-conflicts is what that operator passes.
FORCE = "--force-conflicts"
# Changed by the upgrade: the app's config (interfaces, workers, web) and a pod annotation of
# each StatefulSet, as a new image or server setting would: every workload of the release rolls.
UPGRADE = ("--set", "config.drainTimeout=20",
           "--set-string", "redis.podAnnotations.e2e-upgrade=1",
           "--set-string", "database.postgresql.podAnnotations.e2e-upgrade=1")


async def test_helm_upgrade__every_pod_rolls_nothing_lost(release: Release, stack: KubeStack
                                                          ) -> None:
    """The upgrade rolls every pod of the release, the Redis Cluster's one by one (each master
    hands its slots over in its preStop), under the load of the node scenarios: no request is
    lost silently (`upgrade_lost`); the release works on the new pods."""
    before, installed = pod_uids(release), revision(release)
    load = nodes.Load(stack)
    await load.start()
    try:
        with phase("upgrade"), nodes.pod_logs(release, "upgrade"):
            await asyncio.to_thread(
                release.helm, "upgrade", release.name, release.chart, "--values",
                release.values, *UPGRADE, FORCE, "--wait", "--timeout", "10m")
            await asyncio.sleep(3)  # traffic on the new pods too
            await load.stop()
        figures = load.figures()
        RESULTS["upgrade_lost"] = figures["lost"]
        print(f"upgrade under load: {figures}")
        await load.stream_works()
    finally:
        await load.close()
    assert revision(release) == installed + 1
    kept = before & pod_uids(release)
    assert not kept, f"{len(kept)} pods of the release were not replaced by the upgrade"
    assert figures["lost"] == 0, f"requests lost silently during the upgrade: {figures}"
    await asyncio.to_thread(old_pods_gone, release)
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
    await asyncio.to_thread(old_pods_gone, release)
    await scenarios.scenario_chat_round_trip(stack)
    RESULTS["rollback"] = "ok"


async def test_redis_role_users__interface_refused_worker_commands(release: Release,
                                                                   stack: KubeStack) -> None:
    """An upgrade turns the role users on (redis.acl.enabled): every pod rolls onto its own
    user; an interface's may not push to the project's queues, a worker's may; chat works."""
    with phase("acl_upgrade"):
        await asyncio.to_thread(
            release.helm, "upgrade", release.name, release.chart, "--values", release.values,
            *redis_day2.ACL, FORCE, "--wait", "--timeout", "10m")
    await asyncio.to_thread(old_pods_gone, release)
    interface = redis_day2.push_as(release, "interface")
    assert "user fleet-interface" in interface and "refused" in interface, interface
    worker = redis_day2.push_as(release, "worker")
    assert "user fleet-worker" in worker and "pushed" in worker, worker
    await scenarios.scenario_chat_round_trip(stack)
    RESULTS["acl_users"] = "ok"


def namespaced_objects(release: Release) -> list[str]:
    """Every object left in the namespace but what Kubernetes itself puts in each namespace."""
    kinds = release.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    names = release.kubectl("get", ",".join(kinds), "-o", "name", "--ignore-not-found").split()
    own = {"configmap/kube-root-ca.crt", "serviceaccount/default"}
    return [n for n in names if n not in own]


#: What helm uninstall leaves on purpose: the Secrets the secrets Job made (no Helm ownership), so
#: a reinstall finds the passwords the data was made with (PostgreSQL's kept volume) and the
#: interfaces' resume key; the role users' passwords too, made when
#: test_redis_role_users__... turned them on by an upgrade.
KEPT_BY_UNINSTALL = ("secret/{full}-postgresql-auth", "secret/{full}-redis-auth",
                     "secret/{full}-redis-users", "secret/{full}-resume-key")


def test_helm_uninstall__leaves_only_the_generated_secrets(release: Release) -> None:
    kept = sorted(k.format(full=release.fullname) for k in KEPT_BY_UNINSTALL)
    with phase("uninstall"):
        release.helm("uninstall", release.name, "--wait", "--timeout", "5m")
        deadline = time.monotonic() + 120
        while (left := sorted(namespaced_objects(release))) != kept and time.monotonic() < deadline:
            time.sleep(1)
    volumes = json.loads(release.kubectl("get", "pv", "-o", "json"))["items"]
    left += [f"persistentvolume/{v['metadata']['name']}" for v in volumes
             if v["spec"].get("claimRef", {}).get("namespace") == release.namespace]
    unexpected = sorted(set(left) - set(kept))
    RESULTS["uninstall_left"] = len(unexpected)
    RESULTS["uninstall_kept"] = ",".join(n.split("/", 1)[1].removeprefix(f"{release.fullname}-")
                                         for n in left if n in kept) or "none"
    assert not unexpected, f"helm uninstall left {unexpected}"
    assert sorted(left) == kept, f"helm uninstall removed a generated Secret: left {left}"
    labels = json.loads(release.kubectl("get", *kept, "-o", "json"))["items"]
    for secret in labels:
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
            "channels-fleet-secrets"), secret["metadata"]
        assert "meta.helm.sh/release-name" not in secret["metadata"].get("annotations", {})
    release.kubectl("delete", "namespace", release.namespace, "--wait=true")


async def test_redis_tls_and_role_users__fresh_release(release: Release) -> None:
    """A release with TLS only and the role users (after the first one is gone): it installs
    and chats; an interface's user is refused a worker-only command; no plain port answers."""
    with phase("tls_install"):
        tls = await asyncio.to_thread(redis_day2.install_tls_release, release)
    try:
        web = next(p["metadata"]["name"] for p in tls.app_pods() if component(p) == "web")
        tls.exec(web, "python3", "manage.py", "demo_users")
        session = sign_in(f"http://{tls.service_host('web')}:{tls.service_port('web')}", "alice")
        stack = KubeStack(
            base_url=f"http://{tls.service_host('interface')}:{tls.service_port('interface')}",
            namespace=tls.namespace, release=tls.name, kubectl=tls.kubectl_bin,
            chat=scenarios.ChatProtocol(headers=(("Cookie", f"sessionid={session}"),)))
        await scenarios.scenario_chat_round_trip(stack)
        interface = redis_day2.push_as(tls, "interface")
        assert "user fleet-interface" in interface and "refused" in interface, interface
        worker = redis_day2.push_as(tls, "worker")
        assert "user fleet-worker" in worker and "pushed" in worker, worker
        assert "PONG" not in redis_day2.plain_port_refused(tls)
        RESULTS["tls_acl"] = "ok"
    finally:
        redis_day2.remove(tls)
