"""The `Stack` adapter of tests/e2e/scenarios.py for a Helm release on a Kubernetes cluster.

Traffic goes to `base_url` (a NodePort mapped to the host by kind, the interface Service's DNS
name from inside the local cluster's network, or an Ingress); metrics are
read from each pod through the API server's pod proxy (no port-forward to keep alive); scaling,
stopping and restarting are plain kubectl calls, exactly what an operator would type.
"""

from __future__ import annotations

import asyncio
import json
import os

from .scenarios import ChatProtocol


class KubeStack:
    def __init__(self, base_url: str, namespace: str, release: str,
                 kubectl: str = "kubectl", chat: ChatProtocol | None = None) -> None:
        self.base_url = base_url
        self.namespace = namespace
        self.release = release
        self.kubectl = kubectl
        self.chat = chat or ChatProtocol()
        self.fullname = release if "channels-fleet" in release else f"{release}-channels-fleet"
        self.metrics_port = int(os.environ.get("E2E_METRICS_PORT", "9100"))

    async def _run(self, *args: str, timeout: float = 300) -> str:
        proc = await asyncio.create_subprocess_exec(
            self.kubectl, "-n", self.namespace, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {err.decode().strip()}")
        return out.decode()

    def deployment(self, component: str) -> str:
        return f"deployment/{self.fullname}-{component}"

    async def pods(self, component: str) -> list[str]:
        """Running, ready, not terminating pods of one component."""
        selector = (f"app.kubernetes.io/instance={self.release},"
                    f"app.kubernetes.io/component={component}")
        items = json.loads(await self._run("get", "pods", "-l", selector, "-o", "json"))["items"]
        names = []
        for pod in items:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            conds = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if conds.get("Ready") == "True":
                names.append(pod["metadata"]["name"])
        return sorted(names)

    async def metrics(self, component: str) -> dict[str, str]:
        out = {}
        for pod in await self.pods(component):
            path = (f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{self.metrics_port}"
                    "/proxy/metrics")
            try:
                out[pod] = await self._run("get", "--raw", path, timeout=20)
            except RuntimeError:
                continue  # a pod that just went away
        return out

    async def scale_workers(self, count: int) -> None:
        await self._run("scale", self.deployment("worker"), f"--replicas={count}")
        await self._run("rollout", "status", self.deployment("worker"), "--timeout=300s")
        # rollout status returns when the ReplicaSet is ready; wait for terminating pods too.
        for _ in range(240):
            if len(await self.pods("worker")) == count and await self._settled("worker", count):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"workers did not settle at {count}")

    async def _settled(self, component: str, count: int) -> bool:
        selector = (f"app.kubernetes.io/instance={self.release},"
                    f"app.kubernetes.io/component={component}")
        items = json.loads(await self._run("get", "pods", "-l", selector, "-o", "json"))["items"]
        return len(items) == count

    async def stop_worker(self, instance: str) -> None:
        await self._run("delete", "pod", instance, "--wait=false")

    async def restart_interfaces(self) -> None:
        await self._restart("interface")

    async def _restart(self, component: str) -> None:
        """`kubectl rollout restart` + status, then until the old pods have finished draining:
        rollout status returns once the new pods are ready, while old ones still terminate."""
        count = len(await self.pods(component))
        await self._run("rollout", "restart", self.deployment(component))
        await self._run("rollout", "status", self.deployment(component), "--timeout=600s")
        for _ in range(240):
            if await self._settled(component, count):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"old {component} pods did not finish terminating")

    async def restart_workers(self) -> None:
        await self._restart("worker")  # the old pods re-home their sockets while they drain
