"""Run the chart's rendered pods with podman, as a kubelet would, where no Kubernetes exists.

`helm template` gives the workloads exactly as a cluster would get them; `PodRunner` starts one
container per pod from each pod template (Deployments, the StatefulSets of the built-in Redis
Cluster and PostgreSQL, the migrate Job), translating what the kubelet does:

- image, `command` (the entrypoint) and `args`;
- `env` with `value` (and Kubernetes' `$(VAR)` expansion), `secretKeyRef` into a rendered
  Secret or one the secrets Job made (secrets_job.py), `fieldRef` (metadata.name,
  status.podIP); `envFrom` the same;
- `securityContext`: runAsUser/runAsGroup, readOnlyRootFilesystem, dropped capabilities,
  allowPrivilegeEscalation=false; fsGroup ownership of claimed volumes;
- `emptyDir` volumes as tmpfs mounts, `configMap` volumes as read-only files, a StatefulSet's
  `volumeClaimTemplates` as a host directory per pod (kept across a pod's restarts, as a claim);
- init containers run to completion, in order, before the pod's containers, each on an address
  of its own (in Kubernetes they share the pod's; here each container has its own MAC, so an
  init container on the pod's IP left the Redis pods it asked an ARP entry for a MAC gone
  before the app container took that IP: seconds of its first Redis replies lost);
- each pod gets its own address on podman's network and a hosts file shared by all pods (a
  stand-in for cluster DNS): a StatefulSet pod is `<pod>.<serviceName>.<namespace>.svc`, a
  Service's name resolves to its ready pods (see `Cluster.publish`);
- readiness: the pod's own `readinessProbe` (httpGet on a named port, or exec) polled until it
  passes;
- stop: the `preStop` exec hook, then SIGTERM, then SIGKILL after
  `terminationGracePeriodSeconds` (podman stop -t), as the kubelet orders them.

Container ports are also published on free loopback ports, so the test reaches each pod from
the host; the scenarios' "Service" is a balancer (test_chart_pods.py).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channels_fleet.dev.ports import free_ports

GLOBAL = ["--runtime", "runc"]
# This sandbox refuses podman's default rlimits; these are accepted (see docker/ notes).
LIMITS = ["--ulimit", "nproc=4096:4096", "--ulimit", "nofile=4096:4096"]
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
NETWORK = "podman"
NAMESPACE = "chat"


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *GLOBAL, *args], capture_output=True, text=True,
                          timeout=timeout, check=check)


def free_port() -> int:
    return free_ports(1)[0]


def http_status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def unusable_reason(images: tuple[str, ...]) -> str | None:
    """Why the pods cannot run here (podman, runc or an image missing), or None."""
    if not shutil.which("podman") or not shutil.which("runc"):
        return "podman/runc not installed (make podman)"
    try:
        for image in images:
            if podman("image", "exists", image, check=False, timeout=60).returncode != 0:
                return f"image {image} not built (make images)"
    except subprocess.TimeoutExpired:
        return "podman does not answer"
    return None


def network_range() -> ipaddress.IPv4Network:
    out = podman("network", "inspect", NETWORK, "--format",
                 "{{range .Subnets}}{{.Subnet}}{{end}}")
    return ipaddress.ip_network(out.stdout.strip())


@dataclass
class Pod:
    """One running pod: its container name, address and the host ports of its named ports."""

    component: str
    name: str  # the pod's name (a StatefulSet's <name>-<ordinal>); the container adds a suffix
    container_name: str
    ip: str
    ports: dict[str, int]
    container: dict[str, Any]
    grace: int
    started: float = field(default_factory=time.monotonic)
    exit_code: int | None = None  # after stop(): 137 means the grace period ran out (SIGKILL)
    last_logs: str = ""  # after stop() with a non-zero exit: the last lines it logged

    def url(self, port_name: str) -> str:
        return f"http://127.0.0.1:{self.ports[port_name]}"

    def ready(self) -> bool:
        probe = self.container.get("readinessProbe", {})
        if "httpGet" in probe:
            return http_status(self.ports[probe["httpGet"]["port"]],
                               probe["httpGet"]["path"]) == 200
        if "exec" in probe:
            done = podman("exec", self.container_name, *probe["exec"]["command"], check=False,
                          timeout=probe.get("timeoutSeconds", 10) + 5)
            return done.returncode == 0
        return self.running()

    def running(self) -> bool:
        out = podman("inspect", "--format", "{{.State.Running}}", self.container_name,
                     check=False)
        return out.stdout.strip() == "true"

    def exec(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return podman("exec", self.container_name, *command, check=False, timeout=timeout)

    def logs(self) -> str:
        out = podman("logs", self.container_name, check=False)
        return out.stdout + out.stderr

    def stop(self) -> None:
        """preStop hook, then SIGTERM, then SIGKILL once the grace period is over."""
        hook = self.container.get("lifecycle", {}).get("preStop", {}).get("exec")
        if hook:
            done = podman("exec", self.container_name, *hook["command"], check=False,
                          timeout=self.grace + 5)
            assert done.returncode == 0, f"preStop {hook['command']} failed: {done.stderr}"
        podman("stop", "-t", str(self.grace), self.container_name, check=False,
               timeout=self.grace + 30)
        self._record_exit()

    def kill(self) -> None:
        """The node dies: SIGKILL, no preStop, no drain."""
        podman("kill", "--signal", "KILL", self.container_name, check=False)
        podman("wait", self.container_name, check=False, timeout=30)
        self._record_exit()

    def _record_exit(self) -> None:
        out = podman("inspect", "--format", "{{.State.ExitCode}}", self.container_name,
                     check=False)
        self.exit_code = int(out.stdout.strip() or -1)
        if self.exit_code != 0:  # keep the pod's last words for the assertion message
            logs = podman("logs", "--tail", "30", self.container_name, check=False)
            self.last_logs = logs.stdout + logs.stderr

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.container_name, check=False)


class Cluster:
    """What the pods share: addresses on podman's network and one hosts file (the DNS)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-chart-pods-"))
        self.hosts_file = self.dir / "hosts"
        self.names: dict[str, list[str]] = {}  # DNS name -> addresses
        net = network_range()
        # A random /24 high in podman's range: test runs of other checkouts pick others.
        self.pool = [str(ip) for ip in
                     list(net.hosts())[-256 * random.randint(2, 60):][:250] if ip.packed[-1] > 1]
        self.used: set[str] = set()
        self.write()

    def address(self) -> str:
        free = [ip for ip in self.pool if ip not in self.used]
        ip = random.choice(free)
        self.used.add(ip)
        return ip

    def publish(self, name: str, addresses: list[str]) -> None:
        self.names[name] = list(addresses)
        self.write()

    def write(self) -> None:
        lines = ["127.0.0.1 localhost"]
        for name, addresses in self.names.items():
            lines += [f"{ip} {name}" for ip in addresses]
        # Rewritten in place (same inode): containers that mounted it see the change.
        with open(self.hosts_file, "r+" if self.hosts_file.exists() else "w") as f:
            f.seek(0)
            f.write("\n".join(lines) + "\n")
            f.truncate()
        os.chmod(self.hosts_file, 0o644)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def workload_key(doc: dict[str, Any]) -> str:
    labels = doc["metadata"]["labels"]
    shard = labels.get("channels-fleet.io/shard")
    component = labels["app.kubernetes.io/component"]
    return component if shard is None else f"{component}/{shard}"


class PodRunner:
    """Starts pods of the rendered workloads by component label (interface, worker, web,
    redis, postgresql, migrate) on a `Cluster`."""

    def __init__(self, docs: list[dict[str, Any]], cluster: Cluster | None = None) -> None:
        self.docs = docs
        self.cluster = cluster or Cluster()
        self.secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
        self.config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        # By component, and a Redis shard's StatefulSet by shard too: "redis/0".
        self.workloads = {workload_key(d): d for d in docs
                          if d["kind"] in ("Deployment", "StatefulSet", "Job")}
        for d in docs:  # a bare Pod (`helm test`'s) as a one-pod workload
            if d["kind"] == "Pod":
                self.workloads[d["metadata"]["labels"]["app.kubernetes.io/component"]] = {
                    **d, "spec": {"template": {"spec": d["spec"]}}}
        self.pods: list[Pod] = []
        self.stopped: list[Pod] = []
        self.claims: dict[str, Path] = {}  # pod name/volume -> host directory

    # -- environment ---------------------------------------------------------------------------

    def _secret(self, name: str, key: str) -> str:
        data = self.secrets[name].get("data", {})
        return base64.b64decode(data[key]).decode()

    def _env(self, container: dict[str, Any], pod_name: str, ip: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            secret = self.secrets[source["secretRef"]["name"]]
            for key in secret.get("data", {}):
                env[key] = self._secret(secret["metadata"]["name"], key)
        fields = {"metadata.name": pod_name, "status.podIP": ip,
                  "metadata.namespace": NAMESPACE}
        for item in container.get("env", []):
            if "value" in item:
                # Kubernetes expands $(VAR) from variables defined earlier in the list.
                env[item["name"]] = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)),
                                             str(item["value"]))
            elif "secretKeyRef" in item["valueFrom"]:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self._secret(ref["name"], ref["key"])
            else:
                env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        return env

    # -- volumes -------------------------------------------------------------------------------

    def _config_map_dir(self, name: str, mode: int) -> Path:
        target = self.cluster.dir / "configmaps" / name
        if not target.exists():
            target.mkdir(parents=True)
            for key, body in self.config_maps[name]["data"].items():
                path = target / key
                path.write_text(body if body.endswith("\n") else body + "\n")
                path.chmod(mode)
        return target

    def _claim_dir(self, pod_name: str, volume: str, fs_group: int | None) -> Path:
        key = f"{pod_name}/{volume}"
        if key not in self.claims:
            path = self.cluster.dir / "claims" / pod_name / volume
            path.mkdir(parents=True)
            if fs_group is not None:  # the kubelet gives the volume to the pod's fsGroup
                os.chown(path, 0, fs_group)
                path.chmod(0o2775)
            self.claims[key] = path
        return self.claims[key]

    def _mounts(self, workload: dict[str, Any], pod_spec: dict[str, Any],
                container: dict[str, Any], pod_name: str) -> list[str]:
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        fs_group = pod_spec.get("securityContext", {}).get("fsGroup")
        opts = []
        for mount in container.get("volumeMounts", []):
            name, path = mount["name"], mount["mountPath"]
            if name in claims:
                opts += ["-v", f"{self._claim_dir(pod_name, name, fs_group)}:{path}:rw"]
            elif "configMap" in volumes[name]:
                source = volumes[name]["configMap"]
                mode = source.get("defaultMode", 0o644)
                opts += ["-v", f"{self._config_map_dir(source['name'], mode)}:{path}:ro"]
            else:
                size = volumes[name]["emptyDir"].get("sizeLimit", "64Mi").replace("Mi", "m")
                if size.endswith("Gi"):
                    size = size.replace("Gi", "g")
                opts += ["--tmpfs", f"{path}:rw,size={size},mode=1777,notmpcopyup"]
        return opts

    # -- pods ----------------------------------------------------------------------------------

    def _run_opts(self, workload: dict[str, Any], pod_spec: dict[str, Any],
                  container: dict[str, Any], pod_name: str, ip: str) -> list[str]:
        opts = [*LIMITS, "--network", NETWORK, "--ip", ip, "--hostname", pod_name[:63],
                "-v", f"{self.cluster.hosts_file}:/etc/hosts:ro"]
        sc = {**pod_spec.get("securityContext", {}), **container.get("securityContext", {})}
        opts += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
        if "fsGroup" in sc:
            opts += ["--group-add", str(sc["fsGroup"])]
        if sc.get("readOnlyRootFilesystem"):
            opts += ["--read-only", "--read-only-tmpfs=false"]
        if sc.get("allowPrivilegeEscalation") is False:
            opts += ["--security-opt", "no-new-privileges"]
        for cap in sc.get("capabilities", {}).get("drop", []):
            opts += ["--cap-drop", cap]
        opts += self._mounts(workload, pod_spec, container, pod_name)
        for key, value in self._env(container, pod_name, ip).items():
            opts += ["--env", f"{key}={value}"]
        if "command" in container:
            opts += ["--entrypoint", container["command"][0]]
        return opts

    def _argv(self, container: dict[str, Any]) -> list[str]:
        return [*container.get("command", [])[1:], *container.get("args", [])]

    def start(self, workload_name: str, ordinal: int | None = None) -> Pod:
        """Start one pod of a workload (its component, or "redis/<shard>"); a StatefulSet's pod
        takes its ordinal's name."""
        workload = self.workloads[workload_name]
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        pod_spec = workload["spec"]["template"]["spec"]
        base = workload["metadata"]["name"]
        if workload["kind"] == "StatefulSet":
            if ordinal is None:
                taken = {p.name for p in self.pods}
                ordinal = next(i for i in range(1000) if f"{base}-{i}" not in taken)
            pod_name = f"{base}-{ordinal}"
        else:
            pod_name = f"{base}-{uuid.uuid4().hex[:10]}"
        ip = self.cluster.address()
        if workload["kind"] == "StatefulSet":
            domain = f"{workload['spec']['serviceName']}.{NAMESPACE}.svc"
            self.cluster.publish(f"{pod_name}.{domain}", [ip])
        for init in pod_spec.get("initContainers", []):
            name = f"fleet-chart-{pod_name}-init-{uuid.uuid4().hex[:6]}"
            opts = self._run_opts(workload, pod_spec, init, pod_name, ip)
            at = opts.index("--ip")
            del opts[at:at + 2]  # an address of its own (see the module docstring)
            done = podman("run", "--name", name, *opts, init["image"], *self._argv(init),
                          check=False, timeout=300)
            logs = podman("logs", name, check=False)
            podman("rm", "-f", name, check=False)
            assert done.returncode == 0, (
                f"init container {init['name']} of {pod_name} failed ({done.returncode}):\n"
                f"{logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        (container, *sidecars) = pod_spec["containers"]
        name = f"fleet-chart-{pod_name}-{uuid.uuid4().hex[:6]}"
        opts = ["--detach", "--name", name,
                *self._run_opts(workload, pod_spec, container, pod_name, ip)]
        ports = {}
        for port in container.get("ports", []):
            ports[port["name"]] = free_port()
            opts += ["--publish", f"127.0.0.1:{ports[port['name']]}:{port['containerPort']}"]
        podman("run", *opts, container["image"], *self._argv(container))
        pod = Pod(component, pod_name, name, ip, ports, container,
                  int(pod_spec.get("terminationGracePeriodSeconds", 30)))
        self.pods.append(pod)
        return pod

    def run_job(self, component: str = "migrate", timeout: float = 600) -> str:
        """Run a Job's (or a bare Pod's) pod to completion; its logs (raises on a non-zero
        exit)."""
        pod = self.start(component)
        done = podman("wait", pod.container_name, check=False, timeout=timeout)
        logs = pod.logs()
        self.pods.remove(pod)
        pod.remove()
        assert done.stdout.strip() == "0", f"{component} failed:\n{logs[-3000:]}"
        return logs

    def wait_ready(self, pod: Pod, timeout: float = 120) -> Pod:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pod.running():
                raise AssertionError(f"{pod.name} exited:\n{pod.logs()[-3000:]}")
            if pod.ready():
                return pod
            time.sleep(0.5)
        raise AssertionError(f"{pod.name} not ready in {timeout}s:\n{pod.logs()[-3000:]}")

    def publish(self, service: str, component: str) -> None:
        """A Service's name resolves to the ready pods of its component (all containers that
        start after this, and those that resolve again)."""
        self.cluster.publish(service, [p.ip for p in self.alive(component)])

    def alive(self, component: str) -> list[Pod]:
        return [p for p in self.pods if p.component == component]

    def stop(self, pod: Pod) -> None:
        self.pods.remove(pod)
        pod.stop()
        pod.remove()
        self.stopped.append(pod)

    def kill(self, pod: Pod) -> None:
        self.pods.remove(pod)
        pod.kill()
        pod.remove()
        self.stopped.append(pod)

    def forget_claims(self, pod_name: str) -> None:
        """The pod comes back on an empty volume (a lost disk, or a new node's emptyDir)."""
        for key in [k for k in self.claims if k.startswith(f"{pod_name}/")]:
            shutil.rmtree(self.claims.pop(key), ignore_errors=True)

    def remove_all(self) -> None:
        for pod in self.pods:
            pod.remove()
        self.pods.clear()
