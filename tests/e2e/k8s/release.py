"""The Helm release under test on the local cluster, and the commands an operator would type.

Everything goes through the real `helm` and `kubectl` binaries (KUBECONFIG from the
environment: scripts/k8s/e2e.sh points it at the local cluster's admin kubeconfig).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[3]
DEMO_PASSWORD = "demo-password"  # examples/chat: manage.py demo_users (alice, bob)
APP_COMPONENTS = ("interface", "worker", "web")


class CommandFailed(AssertionError):
    """A helm or kubectl command exited non-zero; the message holds its stderr."""


def run(*args: str, timeout: float = 900, check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise CommandFailed(f"{' '.join(args)}: exit {done.returncode}\n"
                            f"{(done.stderr or done.stdout).strip()[-3000:]}")
    return done.stdout


@dataclass
class Release:
    namespace: str
    name: str
    chart: str
    values: str
    helm_bin: str = "helm"
    kubectl_bin: str = "kubectl"
    #: Values the tests add to the ones in `values` (upgrade), as helm --set arguments.
    sets: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls) -> Release:
        return cls(namespace=os.environ.get("E2E_NAMESPACE", "fleet-e2e"),
                   name=os.environ.get("E2E_RELEASE", "fleet"),
                   chart=os.environ.get("CHART", str(ROOT / "charts" / "channels-fleet")),
                   values=os.environ.get("E2E_K8S_VALUES",
                                         str(ROOT / "tests" / "e2e" / "k8s" / "values.yaml")),
                   helm_bin=os.environ.get("HELM", "helm"),
                   kubectl_bin=os.environ.get("KUBECTL", "kubectl"))

    @property
    def fullname(self) -> str:
        return self.name if "channels-fleet" in self.name else f"{self.name}-channels-fleet"

    def service_host(self, component: str) -> str:
        """A Service's cluster DNS name, as a client pod resolves it."""
        return f"{self.fullname}-{component}.{self.namespace}.svc.cluster.local"

    def service_port(self, component: str) -> int:
        """The port named `http` of a component's Service."""
        ports = json.loads(self.kubectl("get", "service", f"{self.fullname}-{component}",
                                        "-o", "jsonpath={.spec.ports}"))
        return next(p["port"] for p in ports if p.get("name") == "http")

    def helm(self, *args: str, timeout: float = 900) -> str:
        return run(self.helm_bin, *args, "--namespace", self.namespace, timeout=timeout)

    def kubectl(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        return run(self.kubectl_bin, "--namespace", self.namespace, *args, timeout=timeout,
                   check=check)

    def computed_values(self) -> dict:
        """The release's values as installed: the chart's defaults with ours on top."""
        return json.loads(self.helm("get", "values", self.name, "--all", "-o", "json"))

    def install(self, *extra: str) -> str:
        return self.helm("install", self.name, self.chart, "--values", self.values,
                         "--wait", "--timeout", "10m", *extra)

    def pods(self, selector: str = "") -> list[dict]:
        selector = f"app.kubernetes.io/instance={self.name}" + (f",{selector}" if selector else "")
        return json.loads(self.kubectl("get", "pods", "-l", selector, "-o", "json"))["items"]

    def app_pods(self) -> list[dict]:
        """Running pods of the interface, worker and web Deployments."""
        return [p for p in self.pods() if component(p) in APP_COMPONENTS
                and p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")]

    def restarts(self) -> dict[str, int]:
        """Container restarts per running app pod."""
        return {p["metadata"]["name"]: sum(c.get("restartCount", 0)
                                           for c in p["status"].get("containerStatuses", []))
                for p in self.app_pods()}

    def why_restarted(self) -> str:
        """For each restarted app container: how its last run ended (the kubelet's reason and
        exit code, the probe events) and the tail of that run's log, for a failure message."""
        lines = []
        for pod in self.app_pods():
            name = pod["metadata"]["name"]
            for status in pod["status"].get("containerStatuses", []):
                if not status.get("restartCount"):
                    continue
                ended = status.get("lastState", {}).get("terminated", {})
                lines.append(f"{name}/{status['name']}: restarted {status['restartCount']}x, "
                             f"last ended {ended.get('reason')} exit={ended.get('exitCode')}")
                events = json.loads(self.kubectl("get", "events", "--field-selector",
                                                 f"involvedObject.name={name}", "-o", "json"))
                lines += [f"  event {e.get('reason')}: {e.get('message')}"
                          for e in events["items"] if e.get("type") == "Warning"]
                log = self.kubectl("logs", name, "-c", status["name"], "--previous",
                                   "--tail", "25", check=False)
                lines += [f"  | {line}" for line in log.splitlines()]
        return "\n".join(lines)

    def exec(self, pod: str, *command: str, check: bool = True) -> str:
        return self.kubectl("exec", pod, "--", *command, timeout=60, check=check)


def component(pod: dict) -> str:
    return pod["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")


def is_ready(pod: dict) -> bool:
    if pod["status"].get("phase") == "Succeeded":
        return False
    conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
    return conditions.get("Ready") == "True"


def sign_in(web_url: str, username: str, password: str = DEMO_PASSWORD) -> str:
    """Sign in on the web tier's login form, as a browser does; returns the session id."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{web_url}/accounts/login/", timeout=20) as resp:
        page = resp.read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, f"no login form at {web_url}/accounts/login/"
    form = urlencode({"username": username, "password": password,
                      "csrfmiddlewaretoken": match.group(1), "next": "/"}).encode()
    with opener.open(f"{web_url}/accounts/login/", data=form, timeout=20) as resp:
        assert resp.url.rstrip("/") == web_url, f"login as {username} failed: ended at {resp.url}"
    session = [c.value for c in jar if c.name == "sessionid"]
    assert session, f"login as {username} set no session cookie"
    return session[0]


def redis_cli(release: Release, pod: str, *args: str) -> str:
    command = 'valkey-cli -a "$REDIS_PASSWORD" --no-auth-warning "$@"'
    return release.exec(pod, "sh", "-c", command, "valkey-cli", *args)


def cluster_states(release: Release) -> dict[str, str]:
    """Each running Redis pod -> its ``cluster_state`` (``ok`` or ``fail``), as it sees it."""
    states = {}
    for pod in release.pods("app.kubernetes.io/component=redis"):
        name = pod["metadata"]["name"]
        if not is_ready(pod):
            states[name] = "not ready"
            continue
        info = redis_cli(release, name, "cluster", "info")
        states[name] = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                             if line.startswith("cluster_state:")), "unknown")
    return states


@dataclass
class RedisView:
    """The running Redis Cluster as one of the release's ready Redis pods sees it."""

    rows: list[list[str]]  # CLUSTER NODES, split
    node_of: dict[str, str]  # pod IP -> node name
    pod_of: dict[str, str]  # pod IP -> pod name

    @classmethod
    def read(cls, release: Release) -> RedisView:
        pods = [p for p in release.pods("app.kubernetes.io/component=redis") if is_ready(p)]
        rows = [line.split() for line in
                redis_cli(release, pods[0]["metadata"]["name"], "cluster", "nodes").splitlines()]
        return cls(rows, {p["status"]["podIP"]: p["spec"]["nodeName"] for p in pods},
                   {p["status"]["podIP"]: p["metadata"]["name"] for p in pods})

    def master_row(self, release: Release, key: str) -> list[str]:
        """The CLUSTER NODES row of the live master serving `key`'s slot."""
        slot = int(redis_cli(release, next(iter(self.pod_of.values())), "cluster", "keyslot",
                             key))
        for row in self.rows:
            if "master" not in row[2] or "fail" in row[2]:
                continue
            for span in row[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return row
        raise AssertionError(f"no master serves the slot {slot} of {key!r}")

    def shards(self) -> dict[str, list[str]]:
        """Each shard's master (node id) -> the pod IPs of its live copies, the master's first."""
        shards = {row[0]: [ip_of(row)] for row in self.rows
                  if "master" in row[2] and "fail" not in row[2] and len(row) > 8}
        for row in self.rows:
            if row[3] in shards and "fail" not in row[2]:
                shards[row[3]].append(ip_of(row))
        return shards

    def copies(self, release: Release, key: str) -> list[str]:
        """The pod IPs of the live copies of `key`'s shard, the master's first."""
        return self.shards()[self.master_row(release, key)[0]]


def ip_of(row: list[str]) -> str:
    return row[1].split(":")[0]


def node_serving_key(release: Release, key: str) -> str:
    """The node of the Redis pod that is master of `key`'s slot now."""
    view = RedisView.read(release)
    return view.node_of[ip_of(view.master_row(release, key))]


def master_pod_of(release: Release, key: str) -> str:
    """The Redis pod that is master of `key`'s slot now."""
    view = RedisView.read(release)
    return view.pod_of[ip_of(view.master_row(release, key))]


def nodes_holding_key(release: Release, key: str) -> set[str]:
    """The nodes with a copy (master or replica) of `key`'s shard."""
    view = RedisView.read(release)
    return {view.node_of[ip] for ip in view.copies(release, key) if ip in view.node_of}


def serve_key_from(release: Release, key: str, node: str) -> None:
    """Make the copy of `key`'s shard on `node` that shard's master (CLUSTER FAILOVER there),
    as masters come to share a node after a few drains; returns once it serves the slot."""
    view = RedisView.read(release)
    copies = view.copies(release, key)
    if view.node_of.get(copies[0]) == node:
        return
    copy = next((view.pod_of[ip] for ip in copies if view.node_of.get(ip) == node), None)
    assert copy, f"no copy of {key!r}'s shard on {node}: {view.rows}"
    redis_cli(release, copy, "cluster", "failover")
    deadline = time.monotonic() + 60
    while node_serving_key(release, key) != node:
        assert time.monotonic() < deadline, f"{copy} did not take {key!r}'s slot over"
        time.sleep(0.5)


def shard_placement(release: Release) -> dict[str, list[str]]:
    """Each shard (a master with slots, by its pod) -> the nodes of its master and replicas,
    from the running cluster's CLUSTER NODES and the pods' placement."""
    view = RedisView.read(release)
    node_of, pod_of = view.node_of, view.pod_of
    shards = view.shards()
    unknown = [a for ips in shards.values() for a in ips if a not in node_of]
    assert not unknown, f"cluster members that are no ready pod of the release: {unknown}"
    return {pod_of[ips[0]]: [node_of[a] for a in ips] for ips in shards.values()}
