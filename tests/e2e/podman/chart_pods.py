"""Run the chart's rendered pods with podman, as a kubelet would, where no Kubernetes exists.

`helm template` gives the Deployments exactly as a cluster would get them; `PodRunner` starts
one container per replica from each pod template, translating what the kubelet does:

- image and `args` (the image's ENTRYPOINT stays: tini -> channels-fleet);
- `env` with `value` (and Kubernetes' `$(VAR)` expansion) or `secretKeyRef` into a rendered
  Secret, `envFrom` the same;
- `securityContext`: runAsUser/runAsGroup, readOnlyRootFilesystem, dropped capabilities,
  allowPrivilegeEscalation=false;
- `emptyDir` volumes as tmpfs mounts; container ports published on free loopback ports;
- readiness: the pod's own `readinessProbe` (httpGet on a named port) polled until 200;
- stop: the `preStop` exec hook, then SIGTERM, then SIGKILL after
  `terminationGracePeriodSeconds` (podman stop -t), as the kubelet orders them.

Services are replaced by `ChartStack` (tests/e2e/podman/test_chart_pods.py): a loopback balancer
that sends each new connection to a ready interface pod, as kube-proxy does.
"""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

GLOBAL = ["--runtime", "runc"]
# This sandbox refuses podman's default rlimits; these are accepted (see docker/ notes).
LIMITS = ["--ulimit", "nproc=4096:4096", "--ulimit", "nofile=4096:4096"]
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *GLOBAL, *args], capture_output=True, text=True,
                          timeout=timeout, check=check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@dataclass
class Pod:
    """One running replica: its container name and the host ports of its named ports."""

    component: str
    name: str
    ports: dict[str, int]
    container: dict[str, Any]
    grace: int
    started: float = field(default_factory=time.monotonic)
    exit_code: int | None = None  # after stop(): 137 means the grace period ran out (SIGKILL)
    last_logs: str = ""  # after stop() with a non-zero exit: the last lines it logged

    def url(self, port_name: str) -> str:
        return f"http://127.0.0.1:{self.ports[port_name]}"

    def ready(self) -> bool:
        probe = self.container.get("readinessProbe", {}).get("httpGet")
        if probe is None:
            return self.running()
        return http_status(self.ports[probe["port"]], probe["path"]) == 200

    def running(self) -> bool:
        out = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return out.stdout.strip() == "true"

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def stop(self) -> None:
        """preStop hook, then SIGTERM, then SIGKILL once the grace period is over."""
        hook = self.container.get("lifecycle", {}).get("preStop", {}).get("exec")
        if hook:
            done = podman("exec", self.name, *hook["command"], check=False,
                          timeout=self.grace + 5)
            assert done.returncode == 0, f"preStop {hook['command']} failed: {done.stderr}"
        podman("stop", "-t", str(self.grace), self.name, check=False, timeout=self.grace + 30)
        out = podman("inspect", "--format", "{{.State.ExitCode}}", self.name, check=False)
        self.exit_code = int(out.stdout.strip() or -1)
        if self.exit_code != 0:  # keep the pod's last words for the assertion message
            logs = podman("logs", "--tail", "30", self.name, check=False)
            self.last_logs = logs.stdout + logs.stderr

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)


class PodRunner:
    """Starts replicas of the rendered Deployments; `hosts` maps names (Services) to IPs."""

    def __init__(self, docs: list[dict[str, Any]], hosts: dict[str, str]) -> None:
        self.docs = docs
        self.hosts = hosts
        self.secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
        self.deployments = {
            d["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in docs if d["kind"] == "Deployment"
        }
        self.pods: list[Pod] = []
        self.stopped: list[Pod] = []

    def _secret(self, name: str, key: str) -> str:
        data = self.secrets[name].get("data", {})
        return base64.b64decode(data[key]).decode()

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            secret = self.secrets[source["secretRef"]["name"]]
            for key in secret.get("data", {}):
                env[key] = self._secret(secret["metadata"]["name"], key)
        for item in container.get("env", []):
            if "value" in item:
                # Kubernetes expands $(VAR) from variables defined earlier in the list.
                env[item["name"]] = _VAR.sub(lambda m: env.get(m.group(1), m.group(0)),
                                             str(item["value"]))
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self._secret(ref["name"], ref["key"])
        return env

    def start(self, component: str) -> Pod:
        deployment = self.deployments[component]
        pod_spec = deployment["spec"]["template"]["spec"]
        (container,) = pod_spec["containers"]
        name = f"fleet-chart-{component}-{uuid.uuid4().hex[:8]}"
        opts = [*LIMITS, "--detach", "--name", name]
        for host, ip in self.hosts.items():
            opts += ["--add-host", f"{host}:{ip}"]
        sc = {**pod_spec.get("securityContext", {}), **container.get("securityContext", {})}
        opts += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
        if sc.get("readOnlyRootFilesystem"):
            opts += ["--read-only", "--read-only-tmpfs=false"]
        if sc.get("allowPrivilegeEscalation") is False:
            opts += ["--security-opt", "no-new-privileges"]
        for cap in sc.get("capabilities", {}).get("drop", []):
            opts += ["--cap-drop", cap]
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            empty = volumes[mount["name"]]["emptyDir"]
            size = empty.get("sizeLimit", "64Mi").replace("Mi", "m")
            opts += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
        ports = {}
        for port in container.get("ports", []):
            ports[port["name"]] = free_port()
            opts += ["--publish", f"127.0.0.1:{ports[port['name']]}:{port['containerPort']}"]
        for key, value in self._env(container).items():
            opts += ["--env", f"{key}={value}"]
        podman("run", *opts, container["image"], *container.get("args", []))
        pod = Pod(component, name, ports, container,
                  int(pod_spec.get("terminationGracePeriodSeconds", 30)))
        self.pods.append(pod)
        return pod

    def wait_ready(self, pod: Pod, timeout: float = 90) -> Pod:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pod.running():
                raise AssertionError(f"{pod.name} exited:\n{pod.logs()[-3000:]}")
            if pod.ready():
                return pod
            time.sleep(0.2)
        raise AssertionError(f"{pod.name} not ready in {timeout}s:\n{pod.logs()[-3000:]}")

    def alive(self, component: str) -> list[Pod]:
        return [p for p in self.pods if p.component == component]

    def stop(self, pod: Pod) -> None:
        self.pods.remove(pod)
        pod.stop()
        pod.remove()
        self.stopped.append(pod)

    def remove_all(self) -> None:
        for pod in self.pods:
            pod.remove()
        self.pods.clear()
