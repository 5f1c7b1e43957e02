"""make e2e-k8s, autoscale phase: the workers' HPA on the real kube-controller-manager.

The HPA the chart renders (worker.autoscaling.mode=hpa) reads the workers' saturation and the
work queue's oldest age as External metrics from prometheus-adapter (built from its Go module,
run as a Deployment from a scratch image, with deploy/prometheus-adapter/config.yaml), which
queries Debian's Prometheus (run by this test in the cluster's network namespace, scraping the
release's metrics Services as the chart's ServiceMonitor would, found from their EndpointSlices,
with the recording rules of deploy/prometheus/channels-fleet.rules.yml). Own namespace and
release, installed with tests/e2e/k8s/values.yaml plus the test-only
tests/e2e/k8s/autoscale-values.yaml (workers of concurrency 4, HPA stabilisation in seconds).

1. Load: SOCKETS chat sockets at once on 2 workers of concurrency 4 (8 places): saturation 1,
   connects wait in the queue (1013 after the claim deadline: the client opens again, as a
   client told "try again later" does); the HPA adds workers until every socket is served and
   saturation is back under 0.7.
2. Stop the load: all sockets close but one survivor on each worker (at most 5 of the 8 places
   left on the minimum of 2 workers: under the target), chatting on. The HPA scales in to the
   minimum; the removed workers (steered to ones holding survivors by the pod-deletion-cost
   annotation) drain and re-home the survivors' sockets: none may close.

Prints `k8s-autoscale: scaler=hpa scale_out_s=X max_workers=N scale_in_s=X scale_in_disconnects=0`
(and scripts/k8s/e2e.sh prints it again at the end, from RESULTS).
"""

from __future__ import annotations

import asyncio
import json
import os
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from channels_fleet.dev.ports import free_ports
from channels_fleet.dev.stack import ServiceProcess

from .. import scenarios
from ..kube_stack import KubeStack
from .conftest import RESULTS, phase
from .release import ROOT, Release, is_ready, run, sign_in

pytestmark = [
    pytest.mark.skipif(not os.environ.get("E2E_K8S"),
                       reason="needs the local cluster: run make e2e-k8s"),
    pytest.mark.timeout(1500),
    pytest.mark.slow,
]

HERE = Path(__file__).resolve().parent
NAMESPACE = "fleet-autoscale"
RELEASE_NAME = "scale"
AUTOSCALE_VALUES = HERE / "autoscale-values.yaml"
ADAPTER_MANIFEST = HERE / "autoscale" / "prometheus-adapter.yaml"
ADAPTER_CONFIG = ROOT / "deploy" / "prometheus-adapter" / "config.yaml"
RULES = ROOT / "deploy" / "prometheus" / "channels-fleet.rules.yml"
# Built by scripts/k8s/build.sh, imported into the node's containerd by k8s-up.
ADAPTER_IMAGE = os.environ.get("E2E_ADAPTER_IMAGE", "localhost/k8s/prometheus-adapter:v0.12.0")
SOCKETS = 10  # 2.5 workers' worth at concurrency 4: 4 workers hold them under 70%
MIN_WORKERS = 2
TARGET = 0.7


@pytest.fixture(scope="module")
def release() -> Iterator[Release]:
    base = Release.from_env()
    rel = Release(namespace=NAMESPACE, name=RELEASE_NAME, chart=base.chart, values=base.values,
                  helm_bin=base.helm_bin, kubectl_bin=base.kubectl_bin)
    rel.kubectl("create", "namespace", NAMESPACE)
    try:
        yield rel
    finally:
        rel.helm("uninstall", rel.name, "--wait", "--timeout", "5m")
        rel.kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=300)


class Discovery:
    """What the chart's ServiceMonitor selects, as Prometheus file_sd targets: the endpoints of
    the release's metrics Services (label channels-fleet/metrics), port `metrics`, labelled with
    namespace, pod, service and release (the Service's instance label). Debian's Prometheus is
    built without Kubernetes service discovery, so this thread stands in for it, from the
    EndpointSlices, every 2 s."""

    def __init__(self, kubectl: str, path: Path) -> None:
        self.kubectl, self.path = kubectl, path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="discovery", daemon=True)

    def targets(self) -> list[dict]:
        slices = json.loads(run(self.kubectl, "-n", NAMESPACE, "get", "endpointslices", "-l",
                                "channels-fleet/metrics=true", "-o", "json"))["items"]
        found = []
        for item in slices:
            ports = [p["port"] for p in item.get("ports") or [] if p.get("name") == "metrics"]
            labels = item["metadata"]["labels"]
            for endpoint in item.get("endpoints") or []:
                pod = (endpoint.get("targetRef") or {}).get("name", "")
                found += [{"targets": [f"{address}:{port}"], "labels": {
                    "namespace": NAMESPACE, "pod": pod,
                    "service": labels.get("kubernetes.io/service-name", ""),
                    "release": labels.get("app.kubernetes.io/instance", "")}}
                    for address in endpoint["addresses"] for port in ports]
        return found

    def refresh(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.targets()))
        tmp.replace(self.path)  # Prometheus reads the file when it changes

    def _loop(self) -> None:
        while not self.stop.wait(2):
            try:
                self.refresh()
            except Exception as exc:  # a failed kubectl call: keep the last targets
                print(f"discovery: {exc!r}")

    def __enter__(self) -> Discovery:
        self.refresh()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def prometheus(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's Prometheus in the cluster's network namespace, with the chart's recording rules;
    returns its URL (pods reach it on the node's address, the same port)."""
    workdir = tmp_path_factory.mktemp("prometheus")
    (port,) = free_ports(1)
    targets = workdir / "targets.json"
    config = {
        "global": {"scrape_interval": "2s", "scrape_timeout": "1900ms",
                   "evaluation_interval": "2s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "channels-fleet",
                            "file_sd_configs": [{"files": [str(targets)]}]}],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    with Discovery(release.kubectl_bin, targets):
        proc = ServiceProcess(
            "prometheus",
            ["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=0.0.0.0:{port}",
             "--log.level=warn"],
            env=os.environ, cwd=workdir, log=workdir / "prometheus.log",
            ready_url=f"http://127.0.0.1:{port}/-/ready")
        try:
            proc.wait_ready(60)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate_and_wait(10)


def node_ip(release: Release) -> str:
    nodes = json.loads(release.kubectl("get", "nodes", "-o", "json"))["items"]
    return next(a["address"] for a in nodes[0]["status"]["addresses"]
                if a["type"] == "InternalIP")


@pytest.fixture(scope="module")
def adapter(release: Release, prometheus: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[None]:
    """prometheus-adapter serving custom.metrics.k8s.io and external.metrics.k8s.io."""
    kubectl = release.kubectl_bin
    port = prometheus.rsplit(":", 1)[1]
    manifest = tmp_path_factory.mktemp("adapter") / "prometheus-adapter.yaml"
    manifest.write_text(string.Template(ADAPTER_MANIFEST.read_text()).substitute(
        IMAGE=ADAPTER_IMAGE, PROMETHEUS_URL=f"http://{node_ip(release)}:{port}"))
    run(kubectl, "create", "namespace", "monitoring")
    try:
        run(kubectl, "-n", "monitoring", "create", "configmap", "prometheus-adapter-config",
            f"--from-file=config.yaml={ADAPTER_CONFIG}")
        print(run(kubectl, "apply", "-f", str(manifest)))
        run(kubectl, "-n", "monitoring", "rollout", "status", "deployment/prometheus-adapter",
            "--timeout=180s")
        for api in ("v1beta1.custom.metrics.k8s.io", "v1beta1.external.metrics.k8s.io"):
            run(kubectl, "wait", "--for=condition=Available", f"apiservice/{api}",
                "--timeout=120s")
        yield
    finally:
        run(kubectl, "delete", "--ignore-not-found", "-f", str(manifest), check=False)
        run(kubectl, "delete", "namespace", "monitoring", "--wait=true", check=False,
            timeout=300)


# --- what the cluster says -------------------------------------------------------------------

def hpa_status(release: Release) -> dict:
    hpa = json.loads(release.kubectl("get", "hpa", f"{release.fullname}-worker", "-o", "json"))
    return hpa["status"]


def external_metric(release: Release, name: str, selector: str) -> float | None:
    """What prometheus-adapter serves the HPA, as the HPA asks for it."""
    path = (f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{release.namespace}/{name}"
            f"?labelSelector={selector}")
    out = run(release.kubectl_bin, "get", "--raw", path, check=False)
    items = json.loads(out)["items"] if out.strip() else []
    return parse_quantity(items[0]["value"]) if items else None


def parse_quantity(value: str) -> float:
    """A metric value as the metrics APIs send it: "700m", "3", "1500u"."""
    scale = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3}
    return float(value[:-1]) * scale[value[-1]] if value[-1] in scale else float(value)


def worker_pods(release: Release) -> list[dict]:
    return release.pods("app.kubernetes.io/component=worker")


def ready_workers(release: Release) -> int:
    return sum(1 for p in worker_pods(release)
               if is_ready(p) and not p["metadata"].get("deletionTimestamp"))


def worker_names(release: Release) -> set[str]:
    """The worker pods' names: what the demo's status frame names a socket's worker by (the
    fleet's status names each process after its HOSTNAME, the pod's name)."""
    return {p["metadata"]["name"] for p in worker_pods(release)}


class Timeline:
    """Ready workers and the HPA's view, sampled every second while the phase runs."""

    def __init__(self, release: Release) -> None:
        self.release = release
        self.samples: list[tuple[float, int, int | None, str]] = []
        self.t0 = time.monotonic()

    async def record(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            ready = await asyncio.to_thread(ready_workers, self.release)
            status = await asyncio.to_thread(hpa_status, self.release)
            values = [m["external"]["current"].get("value", "?")
                      for m in status.get("currentMetrics") or [] if m.get("external")]
            self.samples.append((round(time.monotonic() - self.t0, 1), ready,
                                 status.get("desiredReplicas"), "/".join(values)))
            try:
                await asyncio.wait_for(stop.wait(), 1)
            except TimeoutError:
                pass

    def report(self) -> str:
        changes, last = [], None
        for t, ready, desired, values in self.samples:
            if (ready, desired) != last:
                changes.append(f"t={t}s ready={ready} desired={desired} metrics={values}")
                last = (ready, desired)
        return "\n".join(changes)


# --- load --------------------------------------------------------------------------------------

async def served(client: scenarios.ChatClient) -> bool:
    """Does a consumer answer on this socket? (An interface that found no worker with room
    before the claim deadline accepted it and closed it with 1013 at once.)"""
    await asyncio.sleep(0.2)
    if client.closed.is_set():
        return False
    try:
        return await scenarios.worker_of(client, timeout=10) is not None
    except ConnectionClosed:
        return False


async def open_served(client: scenarios.ChatClient, timeout: float = 180) -> int:
    """Open until a worker serves the socket, as a client told to try again later (1013) does;
    returns how many times it was refused."""
    refused = 0
    deadline = time.monotonic() + timeout
    while True:
        await client.reopen(timeout=30)
        if await served(client):
            return refused
        refused += 1
        await client.close()
        assert time.monotonic() < deadline, f"no worker served a socket in {timeout} s"
        await asyncio.sleep(1)


async def wait_until(check, timeout: float, step: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(step)
    return await asyncio.to_thread(check)


async def test_workers_scale_out_under_load_and_in_without_a_disconnect(
        release: Release, adapter: None, prometheus: str) -> None:
    with phase("autoscale_install"):
        release.install("--values", str(AUTOSCALE_VALUES))
    web = next(p["metadata"]["name"] for p in release.app_pods()
               if p["metadata"]["labels"]["app.kubernetes.io/component"] == "web")
    release.exec(web, "python3", "manage.py", "demo_users")
    session = sign_in(f"http://{release.service_host('web')}:{release.service_port('web')}",
                      "alice")
    port = release.service_port("interface")
    stack = KubeStack(base_url=f"http://{release.service_host('interface')}:{port}",
                      namespace=release.namespace, release=release.name,
                      kubectl=release.kubectl_bin,
                      chat=scenarios.ChatProtocol(headers=(("Cookie", f"sessionid={session}"),)))
    selector = f"release%3D{release.name}"

    # The HPA reads the saturation before any load: the adapter, Prometheus and the rules work.
    assert await wait_until(
        lambda: external_metric(release, "channels_fleet_worker_saturation_ratio", selector)
        is not None, 180), "prometheus-adapter never served the workers' saturation"
    assert await wait_until(lambda: hpa_status(release).get("currentMetrics"), 120), (
        f"the HPA never read its metrics: {hpa_status(release)}")
    assert ready_workers(release) == MIN_WORKERS

    timeline = Timeline(release)
    stop_timeline = asyncio.Event()
    recorder = asyncio.create_task(timeline.record(stop_timeline))
    room = scenarios.unique("autoscale")
    clients = [scenarios.ChatClient(stack, room) for _ in range(SOCKETS)]
    try:
        # 1. Load: every socket at once, until each is served.
        with phase("autoscale_out"):
            t0 = time.monotonic()
            refused = await asyncio.gather(*(open_served(c) for c in clients))
            served_s = time.monotonic() - t0

            def settled() -> bool:
                status = hpa_status(release)
                return (status.get("desiredReplicas") == ready_workers(release)
                        == status.get("currentReplicas") and ready_workers(release) > MIN_WORKERS)

            assert await wait_until(settled, 240), f"no scale-out:\n{timeline.report()}"
            # Settled: the HPA wants no more than it has for 20 s.
            await asyncio.sleep(20)
            assert await wait_until(settled, 120), f"scale-out did not settle:\n{timeline.report()}"
            max_workers = max(ready for _, ready, _, _ in timeline.samples)
            scale_out_s = next(t for t, ready, _, _ in timeline.samples if ready == max_workers)
        peak = await asyncio.to_thread(
            prom_value, prometheus,
            f'max_over_time(channels_fleet:worker_saturation:ratio{{namespace="{NAMESPACE}"}}[5m])')
        print(f"\nscale-out: {SOCKETS} sockets served after {served_s:.1f} s "
              f"({sum(refused)} refusals on the way), {max_workers} workers ready at "
              f"{scale_out_s} s, peak saturation {peak}")
        assert peak is not None and peak > TARGET
        await scenarios.broadcast_reaches_all(clients, timeout=15)

        # 2. Stop the load, but for one survivor on each worker that serves sockets. The workers
        #    holding survivors beyond the minimum are marked the cheapest to delete, so the
        #    ReplicaSet removes them first (it otherwise picks among pods of a similar age by UID
        #    and may remove only empty ones): the scale-in always drains sockets.
        workers_before = await asyncio.to_thread(worker_names, release)
        serving = {c: await scenarios.worker_of(c) for c in clients}
        assert set(serving.values()) <= workers_before, (
            f"sockets served by {set(serving.values())}, worker pods {workers_before}")
        by_pod: dict[str, scenarios.ChatClient] = {}
        for client in clients:
            if serving[client]:
                by_pod.setdefault(serving[client], client)
        survivors = list(by_pod.values())
        others = [c for c in clients if c not in survivors]
        doomed = list(by_pod)[:max(0, len(by_pod) - MIN_WORKERS)]
        for pod in doomed:
            release.kubectl("annotate", "pod", pod,
                            "controller.kubernetes.io/pod-deletion-cost=-100")
        assert doomed, f"sockets on fewer than {MIN_WORKERS + 1} workers: {serving}"
        rehomed_before = await rehomes(stack)
        await scenarios.close_all(others)
        chatter_stop = asyncio.Event()
        sent: list[str] = []

        async def chatter() -> None:
            while not chatter_stop.is_set():
                sent.append(scenarios.unique("still-here"))
                await survivors[len(sent) % len(survivors)].say(sent[-1])
                await asyncio.sleep(0.5)

        talk = asyncio.create_task(chatter())
        with phase("autoscale_in"):
            t1 = time.monotonic()

            def scaled_in() -> bool:
                pods = worker_pods(release)
                return len(pods) == MIN_WORKERS and all(is_ready(p) for p in pods)

            ok = await wait_until(scaled_in, 300)
            scale_in_s = round(time.monotonic() - t1, 1)
        chatter_stop.set()
        await talk
        assert ok, f"no scale-in to {MIN_WORKERS} workers:\n{timeline.report()}"
        closed = [c.close_code for c in survivors if c.closed.is_set()]
        removed = workers_before - worker_names(release)
        on_removed = [c for c in survivors if serving[c] in removed]
        rehomed = await rehomes(stack) - rehomed_before
        RESULTS["k8s_autoscale"] = (
            f"scaler=hpa scale_out_s={scale_out_s} max_workers={max_workers} "
            f"scale_in_s={scale_in_s} scale_in_disconnects={len(closed)}")
        print(f"\nHPA timeline:\n{timeline.report()}")
        print(f"survivors: {len(survivors)} ({len(on_removed)} on removed workers "
              f"{sorted(removed)}), re-homed "
              f"{rehomed:.0f}, messages {len(sent)}")
        print(f"k8s-autoscale: {RESULTS['k8s_autoscale']}")
        assert not closed, f"{len(closed)} sockets closed during the scale-in: {closed}"
        assert on_removed, f"no survivor was on a removed worker ({sorted(removed)}): {serving}"
        assert rehomed >= len(on_removed), "the removed workers' sockets were not re-homed"
        # Served by the workers that are left, and in the room: the re-homed consumers rejoined.
        await scenarios.room_works_for_all(survivors)
        workers_now = await asyncio.to_thread(worker_names, release)
        serving_now = {await scenarios.worker_of(c) for c in survivors}
        assert serving_now <= workers_now, (
            f"survivors served by {serving_now}, running workers {workers_now}")
    finally:
        stop_timeline.set()
        await recorder
        await scenarios.close_all(clients)


async def rehomes(stack: KubeStack) -> float:
    """WebSockets the interfaces handed to a new worker because their worker drained."""
    texts = await stack.metrics("interface")
    return sum(v for text in texts.values()
               for labels, v in scenarios.samples(text, "channels_fleet_rehomes_total")
               if labels.get("cause") == "drain")


def prom_value(url: str, expr: str) -> float | None:
    import urllib.parse
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}",
                                timeout=10) as resp:
        result = json.loads(resp.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else None
