"""The node scenarios of make e2e-k8s, on the local cluster's nodes: one drained as a cluster
upgrade drains it, one lost without warning; both under load.

The load (`Load`): probers in several rooms, each asking its consumer for the demo's status
frame (a direct reply to the socket, not a group message) stop-and-wait, and reconnecting after
a close as a client does; beside them one room's broadcast stream. Per prober:

- served: a request answered; its status names the interface and worker pods serving it;
- closes: the codes its socket ended with (it then reconnects and asks again);
- lost: requests unanswered for ``LOST_AFTER`` seconds while the socket stayed open: lost
  silently, the one thing no move of the fleet may do. A late answer is not a lost one: how
  late the slowest came is reported (``slowest_answer_s``), and how soon every prober was
  served again is the scenario's time.

The stream's listeners count the broadcasts they never got: a client between two connections
(its interface lost or drained) misses those of its gap. Reported, not asserted here; what a
socket moved between workers misses is asserted elsewhere (worker crashes and rollouts: 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from .. import scenarios
from ..kube_stack import KubeStack
from .release import (
    ROOT,
    Release,
    cluster_states,
    component,
    is_ready,
    node_serving_key,
    nodes_holding_key,
    serve_key_from,
    shard_placement,
)

#: An answer later than this, on a socket still open, is a lost request. A node lost with the
#: heartbeats' Redis master and a CoreDNS replica on it answers some requests 30-40 s late:
#: the failover, then the death of the node's worker, then its sockets' new apps' connects.
LOST_AFTER = 90.0
PACE = 0.5  # seconds between a prober's answer and its next request
SERVED_WITHIN = 2.0  # a prober is served again once a request is answered this fast


@dataclass
class Prober:
    client: scenarios.ChatClient
    answers: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered)
    closes: list[int] = field(default_factory=list)
    lost_at: list[float] = field(default_factory=list)  # when each lost request was sent
    last_status: dict[str, Any] = field(default_factory=dict)

    async def ask(self) -> dict[str, Any] | None:
        """One status request; its answer, or None (socket closed, or nothing in LOST_AFTER)."""
        before = len(self.client.frames)
        try:
            await self.client.send_frame(json.dumps({"type": "status"}))
        except ConnectionClosed:
            # Closing: its reader notes how it ended (run() reconnects then). Waiting yields
            # to it; returning at once would spin without ever letting it run.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.client.closed.wait(), 10)
            return None
        deadline = time.monotonic() + LOST_AFTER
        while time.monotonic() < deadline and not self.client.closed.is_set():
            for frame in self.client.frames[before:]:
                data = json.loads(frame)
                if data.get("type") == "status":
                    return data
            await asyncio.sleep(0.05)
        return None

    async def run(self, done: asyncio.Event) -> None:
        while not done.is_set():
            if self.client.closed.is_set():
                self.closes.append(self.client.close_code or 1006)
                await self.client.reopen(timeout=180)
                continue
            sent = time.monotonic()
            status = await self.ask()
            if status is not None:
                self.answers.append((sent, time.monotonic()))
                self.last_status = status
                await asyncio.sleep(PACE)
            elif not self.client.closed.is_set():
                self.lost_at.append(sent)
                await asyncio.sleep(PACE)

    @property
    def lost(self) -> int:
        return len(self.lost_at)

    def served_again_after(self, t0: float) -> float:
        """Seconds from t0 until a request sent after it was answered within SERVED_WITHIN."""
        for sent, answered in self.answers:
            if sent >= t0 and answered - sent <= SERVED_WITHIN:
                return answered - t0
        return math.inf


@dataclass
class Listener:
    client: scenarios.ChatClient
    history: list[str] = field(default_factory=list)  # frames of the connections before this
    closes: list[int] = field(default_factory=list)

    def frames(self) -> list[str]:
        return [*self.history, *self.client.frames]

    async def run(self, done: asyncio.Event) -> None:
        while not done.is_set():
            waiter = asyncio.ensure_future(self.client.closed.wait())
            stopper = asyncio.ensure_future(done.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self.client.closed.is_set() and not done.is_set():
                self.closes.append(self.client.close_code or 1006)
                self.history += self.client.frames
                await self.client.reopen(timeout=180)


class Load:
    """Probers in ``rooms`` rooms and a broadcast stream, running until ``stop()``."""

    def __init__(self, stack: KubeStack, rooms: int = 4, per_room: int = 6, listeners: int = 6,
                 keepalive: float | None = None) -> None:
        self.stack, self.keepalive = stack, keepalive
        self.rooms = [scenarios.unique(f"node-r{i}") for i in range(rooms)]
        self.per_room, self.listener_count = per_room, listeners
        self.stream = scenarios.unique("node-stream")
        self.probers: list[Prober] = []
        self.listeners: list[Listener] = []
        self.sent: list[str] = []
        self.send_failures = 0
        self.start_failures: list[str] = []
        self._done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _client(self, room: str) -> scenarios.ChatClient:
        return scenarios.ChatClient(self.stack, room, keepalive=self.keepalive)

    async def start(self) -> None:
        """Connect every client as clients do, retrying a refused or unreachable try (a node
        scenario before may have left a Service endpoint that is still going away); the
        failed tries are in ``figures()``."""
        clients = [self._client(room) for room in self.rooms for _ in range(self.per_room)]
        stream = [self._client(self.stream) for _ in range(self.listener_count)]
        await asyncio.gather(*(c.reopen(timeout=60) for c in [*clients, *stream]))
        await scenarios.broadcast_reaches_all(stream)  # every listener is in the group
        self.probers = [Prober(c) for c in clients]
        self.listeners = [Listener(c) for c in stream]
        self._sender = await self._client(self.stream).reopen(timeout=60)
        self.start_failures = [f for c in [*clients, *stream, self._sender]
                               for f in c.open_failures]
        self._tasks = [asyncio.create_task(p.run(self._done)) for p in self.probers]
        self._tasks += [asyncio.create_task(lst.run(self._done)) for lst in self.listeners]
        self._tasks.append(asyncio.create_task(self._broadcast()))

    async def add_probers(self, count: int, room: str) -> None:
        """`count` more probers in `room`, running at once."""
        clients = [self._client(room) for _ in range(count)]
        await asyncio.gather(*(c.open() for c in clients))
        added = [Prober(c) for c in clients]
        self.probers += added
        self._tasks += [asyncio.create_task(p.run(self._done)) for p in added]

    async def homes(self, pods: set[str], timeout: float = 30) -> list[tuple[str, str]]:
        """(interface pod, worker pod) of each prober, by its latest answer; waits until each
        has answered naming two of `pods` (the fleet's status learns a new process's name
        within a few seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            homes = [(p.last_status.get("interface"), p.last_status.get("worker"))
                     for p in self.probers]
            if all(i in pods and w in pods for i, w in homes):
                return homes  # type: ignore[return-value]
            assert time.monotonic() < deadline, f"probers' homes not all known pods: {homes}"
            await asyncio.sleep(0.5)

    async def _broadcast(self) -> None:
        while not self._done.is_set():
            if self._sender.closed.is_set():
                await self._sender.reopen(timeout=180)
            text = f"{self.stream}-m{len(self.sent)}"
            try:
                await self._sender.say(text)
                self.sent.append(text)
            except ConnectionClosed:
                self.send_failures += 1
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        self._done.set()
        # A prober waits at most LOST_AFTER for an answer; reconnects are bounded too.
        await asyncio.wait_for(asyncio.gather(*self._tasks), LOST_AFTER + 200)

    async def close(self) -> None:
        self._done.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await scenarios.close_all([p.client for p in self.probers]
                                  + [lst.client for lst in self.listeners])
        with contextlib.suppress(Exception):
            await self._sender.close()

    async def stream_works(self, within: float = 60) -> None:
        """After the load: the stream's room serves every listener again within ``within``
        seconds, a listener whose socket ends meanwhile (the load's end, or a socket closed
        1012 because no app accepted it on its new worker) connecting again first, as clients
        do; if not, which worker each says it has, or that it does not answer."""
        deadline = time.monotonic() + within
        while True:
            for lst in self.listeners:
                if lst.client.closed.is_set():
                    lst.closes.append(lst.client.close_code or 1006)
                    lst.history += lst.client.frames
                    await lst.client.reopen(timeout=60)
            clients = [lst.client for lst in self.listeners]
            try:
                await scenarios.broadcast_reaches_all(clients, timeout=2)
                return
            except AssertionError as exc:
                if time.monotonic() < deadline:
                    continue
                homes = await asyncio.gather(*(scenarios.worker_of(c) for c in clients))
                raise AssertionError(
                    f"{exc}; the listeners' workers (None: no answer): {homes}, closed: "
                    f"{[c.closed.is_set() for c in clients]}, closes so far: "
                    f"{[lst.closes for lst in self.listeners]}") from exc

    def lost(self) -> int:
        return sum(p.lost for p in self.probers)

    def broadcast_missed(self) -> int:
        """(message, listener) pairs that never arrived (a text matched whole, as the JSON
        string it is in the frame: ``-m1`` is not found in ``-m10``)."""
        return sum(1 for lst in self.listeners for text in self.sent
                   if not any(f'"{text}"' in f for f in lst.frames()))

    def figures(self) -> dict[str, Any]:
        waits = [answered - sent for p in self.probers for sent, answered in p.answers]
        return {"probers": len(self.probers), "answers": len(waits), "lost": self.lost(),
                "slowest_answer_s": round(max(waits, default=0.0), 1),
                "broadcasts": len(self.sent), "broadcast_missed": self.broadcast_missed(),
                "listener_closes": sorted(int(c) for lst in self.listeners for c in lst.closes),
                "start_failures": self.start_failures}


# --- the cluster ---------------------------------------------------------------------------


def placement(release: Release) -> dict[str, str]:
    """Pod name -> node name, for the release's scheduled pods."""
    return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in release.pods()
            if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")}


def masters_per_node(shards: dict[str, list[str]]) -> dict[str, int]:
    """Node -> Redis masters on it, from `shards` (master pod -> nodes of its copies)."""
    count: dict[str, int] = {}
    for nodes in shards.values():
        count[nodes[0]] = count.get(nodes[0], 0) + 1
    return count


def postgresql_node(release: Release) -> str | None:
    pods = release.pods("app.kubernetes.io/component=postgresql")
    return pods[0]["spec"].get("nodeName") if pods else None


def scale(release: Release, name: str, replicas: int) -> None:
    deployment = f"deployment/{release.fullname}-{name}"
    release.kubectl("scale", deployment, f"--replicas={replicas}")
    release.kubectl("rollout", "status", deployment, "--timeout=300s", timeout=320)


def full_strength(release: Release) -> list[str]:
    """The release's Deployments and StatefulSets short of ready pods: `name ready/wanted`."""
    short = []
    for kind in ("deployments", "statefulsets"):
        items = json.loads(release.kubectl("get", kind, "-l",
                                           f"app.kubernetes.io/instance={release.name}",
                                           "-o", "json"))["items"]
        for item in items:
            wanted = item["spec"].get("replicas", 1)
            ready = item["status"].get("readyReplicas", 0)
            if ready < wanted:
                short.append(f"{item['metadata']['name']} {ready}/{wanted}")
    return short


def wait_full_strength(release: Release, timeout: float) -> float:
    t0 = time.monotonic()
    while short := full_strength(release):
        assert time.monotonic() - t0 < timeout, f"not back at full strength: {short}"
        time.sleep(2)
    return time.monotonic() - t0


def _interface_and_worker_pods(release: Release) -> list[str]:
    return [p["metadata"]["name"] for p in release.app_pods()
            if component(p) in ("interface", "worker")]


@contextlib.contextmanager
def pod_logs(release: Release, scenario: str):
    """The interfaces' and workers' logs over the block, each into
    $E2E_K8S_LOGS/<scenario>/<pod>.log when that is set (scripts/k8s/e2e.sh sets it):
    `kubectl logs -f` of the pods running at its start (their containers may be gone after
    it), then the logs of those started meanwhile (replacements on other nodes)."""
    if not os.environ.get("E2E_K8S_LOGS"):
        yield
        return
    folder = os.path.join(os.environ["E2E_K8S_LOGS"], scenario)
    os.makedirs(folder, exist_ok=True)
    first = _interface_and_worker_pods(release)
    procs = []
    for pod in first:
        out = open(os.path.join(folder, f"{pod}.log"), "w")  # noqa: SIM115 (kept open)
        procs.append((out, subprocess.Popen(
            [release.kubectl_bin, "--namespace", release.namespace, "logs", "-f",
             "--timestamps", pod], stdout=out, stderr=subprocess.STDOUT)))
    try:
        yield
    finally:
        for out, proc in procs:
            proc.terminate()
            proc.wait(10)
            out.close()
        for pod in set(_interface_and_worker_pods(release)) - set(first):
            with open(os.path.join(folder, f"{pod}.log"), "w") as out:
                subprocess.run([release.kubectl_bin, "--namespace", release.namespace, "logs",
                                "--timestamps", pod], stdout=out, stderr=subprocess.STDOUT,
                               timeout=60, check=False)


def wait_cluster_ok(release: Release, timeout: float) -> None:
    """Until every Redis pod says ``cluster_state:ok``."""
    t0 = time.monotonic()
    while (states := cluster_states(release)) and set(states.values()) != {"ok"}:
        assert time.monotonic() - t0 < timeout, f"the Redis Cluster is not ok: {states}"
        time.sleep(2)


def node_ready(release: Release, node: str) -> bool:
    conditions = json.loads(release.kubectl("get", "node", node, "-o", "json"))["status"][
        "conditions"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def node_fault(action: str, node: str) -> None:
    """scripts/k8s/node-fault.sh cut|restore N for the local cluster's node `name-N`."""
    subprocess.run([str(ROOT / "scripts" / "k8s" / "node-fault.sh"), action,
                    node.rsplit("-", 1)[1]], check=True, timeout=60)


def app_pods_on(release: Release, node: str) -> dict[str, list[str]]:
    """Component -> names of its running pods on `node`."""
    out: dict[str, list[str]] = {}
    for pod in release.pods():
        if pod["spec"].get("nodeName") == node and is_ready(pod):
            out.setdefault(component(pod), []).append(pod["metadata"]["name"])
    return out


def nodes(release: Release) -> list[str]:
    return sorted(n["metadata"]["name"] for n in
                  json.loads(release.kubectl("get", "nodes", "-o", "json"))["items"])


def pick_node(release: Release, exclude: set[str], *, with_app_pods: bool,
              below_majority: bool = False, prefer: frozenset[str] = frozenset()
              ) -> tuple[str, dict[str, int]]:
    """The node with the most Redis masters outside `exclude` (with one interface and a worker
    too, if `with_app_pods`; fewer than a majority of the masters, if `below_majority`: a node
    holding most of them takes the cluster's vote with it, which node.sh recovers from only
    after 3 x the node timeout), one of `prefer` if any fits; and the masters per node."""
    shards = shard_placement(release)
    masters = masters_per_node(shards)
    majority = len(shards) // 2 + 1

    def fits(node: str) -> bool:
        # One interface: the clients of a second one there would be drained twice (it stays
        # in the Service while the budget holds its eviction back, so they reconnect to it).
        pods = app_pods_on(release, node)
        return len(pods.get("interface", [])) == 1 and bool(pods.get("worker"))

    candidates = [n for n in nodes(release) if n not in exclude
                  and (not with_app_pods or fits(n))
                  and (not below_majority or masters.get(n, 0) < majority)]
    assert candidates, (f"no node to pick outside {exclude} (with interface and worker: "
                        f"{with_app_pods}): {placement(release)}")
    return max(candidates, key=lambda n: (n in prefer, masters.get(n, 0))), masters


def split_by_home(load: Load, homes: list[tuple[str, str]], on_node: dict[str, list[str]]
                  ) -> dict[str, list[Prober]]:
    """Probers whose interface is on the node; whose worker (only) is; the others."""
    interfaces, workers = set(on_node.get("interface", [])), set(on_node.get("worker", []))
    groups: dict[str, list[Prober]] = {"interface": [], "worker": [], "elsewhere": []}
    for prober, (interface, worker) in zip(load.probers, homes, strict=True):
        key = ("interface" if interface in interfaces else
               "worker" if worker in workers else "elsewhere")
        groups[key].append(prober)
    return groups


def closes_by_home(groups: dict[str, list[Prober]]) -> dict[str, list[int]]:
    return {home: sorted(int(code) for p in probers for code in p.closes)
            for home, probers in groups.items()}


def lost_by_home(groups: dict[str, list[Prober]], t0: float) -> dict[str, list[float]]:
    """Per home, when each lost request was sent: seconds from t0."""
    return {home: sorted(round(t - t0, 1) for p in probers for t in p.lost_at)
            for home, probers in groups.items()}


def spread_app_pods(release: Release) -> None:
    """For interfaces and workers: a pod deleted from a node holding two while another node
    holds none, as an operator evens them out after a node came back (nothing moves back by
    itself): its replacement goes to the emptier node (the chart's spread constraint)."""
    for name in ("interface", "worker"):
        for _ in range(3):
            counts = {n: len(app_pods_on(release, n).get(name, [])) for n in nodes(release)}
            crowded = [n for n, c in counts.items() if c > 1]
            if not crowded or min(counts.values()) > 0:
                break
            release.kubectl("delete", "pod", app_pods_on(release, crowded[0])[name][0])
            release.kubectl("rollout", "status", f"deployment/{release.fullname}-{name}",
                            "--timeout=300s", timeout=320)
            wait_full_strength(release, 300)


async def drain_under_load(release: Release, stack: KubeStack, figures_out: dict[str, Any]
                           ) -> dict[str, Any]:
    """`kubectl drain` of the node with the most Redis masters among those running an interface
    and a worker (first among those with a copy of the heartbeats' shard, made its master), as
    a cluster upgrade drains each node in turn, while the load runs.

    Not PostgreSQL's node: the bundled PostgreSQL's volume is local to its node (local-path),
    so it cannot move, and the web tier and sign-ins stop until that node is back; a cluster
    upgrade meets that once, and production runs an external database (docs/deployment.md).

    Holds: the drain completes through the Eviction API (each budget honoured), the release
    is back at full strength on the other nodes with each shard's copies still apart; the
    clients of the drained workers are not disconnected (their sockets are re-homed), those
    of the drained interfaces at most once (1001, then reconnected), the others never; no
    request is lost silently. `figures_out` gets the figures before the checks run."""
    await asyncio.to_thread(spread_app_pods, release)
    # The hardest case where placement allows: the node serves the heartbeats' slot too (every
    # process writes it every second, and its master moves with the drain), as a master does
    # after a few drains have gathered masters on the nodes that stayed.
    holding = nodes_holding_key(release, "{hb}")
    node, _ = pick_node(release, {postgresql_node(release) or ""}, with_app_pods=True,
                        prefer=frozenset(holding))
    if node in holding:
        await asyncio.to_thread(serve_key_from, release, "{hb}", node)
    masters = masters_per_node(shard_placement(release))
    on_node = app_pods_on(release, node)
    heartbeats_here = node_serving_key(release, "{hb}") == node
    load = Load(stack)
    await load.start()
    try:
        homes = await load.homes(set(placement(release)))
        groups = split_by_home(load, homes, on_node)
        # Which worker claims a socket is up to the workers: more clients until some are on
        # the node's worker through another node's interface (the ones a drain re-homes).
        for _ in range(5):
            if len(groups["worker"]) >= 2:
                break
            await load.add_probers(8, load.rooms[0])
            homes = await load.homes(set(placement(release)))
            groups = split_by_home(load, homes, on_node)
        t0 = time.monotonic()
        # Until the load stops: what the clients meet after the drain counts too.
        with pod_logs(release, "drain"):
            await asyncio.to_thread(release.kubectl, "drain", node, "--ignore-daemonsets",
                                    "--delete-emptydir-data", "--timeout=600s", timeout=660)
            drain_s = time.monotonic() - t0
            back_s = await asyncio.to_thread(wait_full_strength, release, 300)
            await asyncio.sleep(3)  # traffic on the new pods too
            await load.stop()
        shards = shard_placement(release)
        figures = load.figures()
        result = {"node": node, "masters_on_node": masters.get(node, 0),
                  "heartbeats_master_on_node": heartbeats_here,
                  "pods_on_node": {k: len(v) for k, v in on_node.items()},
                  "drain_s": round(drain_s, 1),
                  "full_strength_after_s": round(drain_s + back_s, 1),
                  "probers_by_home": {k: len(v) for k, v in groups.items()},
                  "closes_by_home": closes_by_home(groups),
                  "lost_by_home": lost_by_home(groups, t0), **figures}
        print(f"drain: {result}")
        figures_out.update(result)  # the figures, whatever the checks below say
        await load.stream_works()
    finally:
        await load.close()
        await asyncio.to_thread(release.kubectl, "uncordon", node)
    apart = all(len(set(n)) == len(n) for n in shards.values())
    assert groups["interface"] and groups["worker"], f"no prober on the node's pods: {result}"
    assert apart, f"a shard's copies share a node after the drain: {shards}"
    assert all(not p.closes for p in groups["worker"]), (
        f"clients of the drained workers were disconnected: "
        f"{[p.closes for p in groups['worker']]}")
    assert all(len(p.closes) <= 1 and set(p.closes) <= {scenarios.GOING_AWAY}
               for p in groups["interface"]), (
        f"clients of the drained interfaces: {[p.closes for p in groups['interface']]}")
    assert all(not p.closes for p in groups["elsewhere"]), (
        f"clients of pods on other nodes disconnected: {[p.closes for p in groups['elsewhere']]}")
    assert figures["lost"] == 0, f"requests lost silently during the drain: {result}"
    return result


async def node_loss_under_load(release: Release, stack: KubeStack) -> dict[str, Any]:
    """A node lost without warning (scripts/k8s/node-fault.sh cut: its link gone, its processes
    still running, cut off) while the load runs, with clients that notice a vanished peer
    (WebSocket pings, 5 s). Measured: the time until every prober is served again
    (`node_loss_serve_s`, goal <= 30 s), and what was lost (silently: 0). Then the runbook of
    docs/operations.md: once the node is NotReady, the `node.kubernetes.io/out-of-service`
    taint, after which the release is back at full strength on the other nodes; then the node
    comes back and the taint goes.

    The lost node is neither node 1 (the control plane and the tests run there) nor
    PostgreSQL's (its local volume cannot move: see drain_under_load), and runs an interface
    and a worker (spread there first: a node back from a drain is empty)."""
    control_plane = nodes(release)[0]
    await asyncio.to_thread(spread_app_pods, release)  # the drained node is back, empty
    node, masters = pick_node(release, {control_plane, postgresql_node(release) or ""},
                              with_app_pods=True, below_majority=True)
    on_node = app_pods_on(release, node)
    heartbeats_here = node_serving_key(release, "{hb}") == node
    load = Load(stack, keepalive=5)
    await load.start()
    tainted = False
    try:
        homes = await load.homes(set(placement(release)))
        groups = split_by_home(load, homes, on_node)
        await asyncio.sleep(2)
        with pod_logs(release, "node-loss"):
            await asyncio.to_thread(node_fault, "cut", node)
            # After the link is down: a request sent while node-fault ran may still have been
            # answered, which would read as served again (serve_s 0.2 once).
            t_cut = time.monotonic()

            def served_s() -> float:
                return max(p.served_again_after(t_cut) for p in load.probers)

            while math.isinf(served_s()) and time.monotonic() - t_cut < 180:
                await asyncio.sleep(0.5)
            serve_s = served_s()
            while await asyncio.to_thread(node_ready, release, node):
                assert time.monotonic() - t_cut < 120, f"{node} still Ready 120 s after its cut"
                await asyncio.sleep(1)
            not_ready_s = time.monotonic() - t_cut
            # The runbook: the node is gone for good (or for long): its pods may run elsewhere.
            await asyncio.to_thread(release.kubectl, "taint", "node", node,
                                    "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute")
            tainted = True
            back_s = await asyncio.to_thread(wait_full_strength, release, 300)
            recovered_s = time.monotonic() - t_cut
            await asyncio.sleep(3)
            await load.stop()
            figures = load.figures()
            shards = shard_placement(release)
            result = {"node": node, "masters_on_node": masters.get(node, 0),
                      "heartbeats_master_on_node": heartbeats_here,
                      "pods_on_node": {k: len(v) for k, v in on_node.items()},
                      "serve_s": round(serve_s, 1), "not_ready_s": round(not_ready_s, 1),
                      "full_strength_s": round(recovered_s, 1),
                      "taint_to_full_strength_s": round(back_s, 1),
                      "probers_by_home": {k: len(v) for k, v in groups.items()},
                      "closes_by_home": closes_by_home(groups),
                      "lost_by_home": lost_by_home(groups, t_cut), **figures}
            print(f"node loss: {result}")
            try:
                await load.stream_works()  # its logs kept too
            except AssertionError as exc:  # CI shows the failure's text, maybe not the print
                raise AssertionError(f"{exc}; node loss: {result}") from exc
    finally:
        await load.close()
        await asyncio.to_thread(node_fault, "restore", node)
        if tainted:
            await asyncio.to_thread(release.kubectl, "taint", "node", node,
                                    "node.kubernetes.io/out-of-service-")
    t0 = time.monotonic()
    while not await asyncio.to_thread(node_ready, release, node):
        assert time.monotonic() - t0 < 120, f"{node} not Ready 120 s after its restore"
        await asyncio.sleep(1)
    # The node's pods are replaced, or back (a Redis pod's local volume is there): the tests
    # after this one start from a whole release, or fail here saying what is not.
    await asyncio.to_thread(wait_full_strength, release, 300)
    await asyncio.to_thread(wait_cluster_ok, release, 60)
    assert not math.isinf(serve_s), f"probers not served again 180 s after the cut: {result}"
    assert all(len(set(n)) == len(n) for n in shards.values()), (
        f"a shard's copies share a node after the recovery: {shards}")
    # Disconnects are the clients' to see and recover from (their ping timeout; 1011 from a
    # consumer whose Redis call outlasted the layer's retries): counted, by home, above.
    assert figures["lost"] == 0, f"requests lost silently in the node loss: {result}"
    return result
