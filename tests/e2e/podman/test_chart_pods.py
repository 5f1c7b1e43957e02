"""The shared e2e scenarios against the chart's own rendered pods, run with podman.

Where no Kubernetes runs, this is the closest thing to `helm install`: the pod specs come from
`helm template` with the chart's defaults plus tests/e2e/kind/values.yaml (images, NodePorts,
a short drain) and, for the two images no registry here serves, the local stand-ins. So the
chart's own Redis Cluster (6 Valkey pods running files/redis/node.sh), its PostgreSQL, the
migrate Job, the init containers waiting for it, the Secrets (the generated ones made by the
secrets Job's command: secrets_job.py), security context, emptyDirs,
probes, preStop hooks and grace periods under test are the chart's. See chart_pods.py for what
is translated and how. Skipped (with the reason) when podman or the images (make images) are
missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from pathlib import Path

import pytest

from .. import scenarios
from .chart_pods import PodRunner, unusable_reason
from .secrets_job import run_secrets_job

ROOT = Path(__file__).resolve().parents[3]
KIND_VALUES = ROOT / "tests" / "e2e" / "kind" / "values.yaml"
# The two images no registry serves here: Debian-built stand-ins (scripts/images.sh standins).
STANDINS = ("redis.image.registry=localhost", "redis.image.repository=valkey-standin",
            "redis.image.tag=latest", "database.postgresql.image.registry=localhost",
            "database.postgresql.image.repository=postgres-standin",
            "database.postgresql.image.tag=latest")
IMAGES = ("localhost/channels-fleet-interface:latest", "localhost/channels-fleet-chat:latest",
          "localhost/valkey-standin:latest", "localhost/postgres-standin:latest")
RELEASE = "fleet-channels-fleet"

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


class Balancer:
    """kube-proxy's part: each new TCP connection goes to a ready interface pod."""

    def __init__(self) -> None:
        self.pods: list = []
        self._next = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _pick(self):
        for _ in range(2 * len(self.pods) + 1):
            if not self.pods:
                return None
            self._next = (self._next + 1) % len(self.pods)
            pod = self.pods[self._next]
            if await asyncio.to_thread(pod.ready):
                return pod
        return None

    async def _handle(self, reader, writer) -> None:
        pod = await self._pick()
        try:
            if pod is None:
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", pod.ports["http"])
        except OSError:
            return
        finally:
            if pod is None:
                writer.close()

        async def pipe(src, dst) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        self.server.close()


class ChartStack:
    """`Stack` adapter (tests/e2e/scenarios.py) over PodRunner."""

    def __init__(self, runner: PodRunner, balancer: Balancer, port: int) -> None:
        self.runner = runner
        self.balancer = balancer
        self.base_url = f"http://127.0.0.1:{port}"
        self.chat = scenarios.ChatProtocol()
        self._stopping: set[asyncio.Task] = set()

    async def start(self, component: str):
        pod = await asyncio.to_thread(self.runner.start, component)
        return await asyncio.to_thread(self.runner.wait_ready, pod)

    async def metrics(self, component: str) -> dict[str, str]:
        out = {}
        for pod in self.runner.alive(component):
            try:
                body = await asyncio.to_thread(_get, f"{pod.url('metrics')}/metrics")
            except OSError:
                continue
            out[pod.name] = body
        return out

    async def scale_workers(self, count: int) -> None:
        workers = self.runner.alive("worker")
        while len(workers) < count:
            workers.append(await self.start("worker"))
        await asyncio.gather(*(asyncio.to_thread(self.runner.stop, w) for w in workers[count:]))

    async def stop_worker(self, instance: str) -> None:
        (pod,) = [p for p in self.runner.alive("worker") if p.name == instance]
        task = asyncio.create_task(asyncio.to_thread(self.runner.stop, pod))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def restart_interfaces(self) -> None:
        """As the chart's strategy does it (maxSurge 100%): every new pod first, then the old
        ones leave the Endpoints at once and drain."""
        old = list(self.balancer.pods)
        new = await asyncio.gather(*(self.start("interface") for _ in old))
        self.balancer.pods = list(new)
        await asyncio.gather(*(asyncio.to_thread(self.runner.stop, pod) for pod in old))

    async def restart_workers(self) -> None:
        for old in self.runner.alive("worker"):
            await self.start("worker")
            await asyncio.to_thread(self.runner.stop, old)  # drains: re-homes its sockets


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def backing():
    """The chart's Redis Cluster and PostgreSQL pods, migrated: what every app pod needs."""
    reason = unusable_reason(IMAGES)
    if reason:
        pytest.skip(f"chart pods on podman: {reason}")
    from chart.helm import render  # tests/chart/helm.py: helm template of the chart

    docs = render(KIND_VALUES, sets=STANDINS)
    runner = PodRunner(docs)
    try:
        print(run_secrets_job(runner).strip())
        t0 = time.monotonic()
        postgres = runner.start("postgresql", 0)
        redis = [runner.start(f"redis/{shard}", ordinal)
                 for shard in range(3) for ordinal in (0, 1)]
        for pod in [postgres, *redis]:
            runner.wait_ready(pod, timeout=180)
        runner.publish(f"{RELEASE}-postgresql", "postgresql")
        runner.publish(f"{RELEASE}-redis", "redis")
        print(f"Redis Cluster (6 pods) and PostgreSQL ready in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        logs = runner.run_job("migrate")
        assert "Applying" in logs or "No migrations to apply" in logs, logs[-2000:]
        print(f"migrate Job done in {time.monotonic() - t0:.1f} s")
        yield runner
    finally:
        runner.remove_all()
        runner.cluster.remove()


@pytest.fixture
async def stack(backing):
    runner = backing
    balancer = Balancer()
    stack = ChartStack(runner, balancer, await balancer.start())
    try:
        balancer.pods = list(await asyncio.gather(stack.start("interface"),
                                                  stack.start("interface")))
        await stack.scale_workers(1)
        yield stack
    finally:
        await balancer.close()
        for component in ("interface", "worker", "web"):
            for pod in runner.alive(component):
                await asyncio.to_thread(runner.stop, pod)


async def test_chart_pods__every_scenario(stack):
    """One stack for every scenario (starting pods is the slow part)."""
    for scenario in scenarios.ALL:
        t0 = time.perf_counter()
        try:
            result = await scenario(stack)
        except BaseException:
            # What the live app pods said (stopped ones are removed, as the kubelet does): a loss
            # is then told apart from a drop, a re-home or a declared-dead interface afterwards.
            runner = stack.runner
            for pod in [*runner.alive("interface"), *runner.alive("worker")]:
                tail = "\n".join(pod.logs().splitlines()[-40:])
                print(f"--- {pod.name}:\n{tail}")
            raise
        print(f"{scenario.__name__}: {result} ({time.perf_counter() - t0:.1f} s)")
    # Every pod stopped on the way (scale-in, worker loss, rollout) drained within its grace
    # period: none needed SIGKILL.
    stopped = [p for p in stack.runner.stopped if p.exit_code is not None]
    assert stopped and all(p.exit_code != 137 for p in stopped), [
        (p.name, p.exit_code) for p in stopped]
    print("stopped pods and exit codes:", sorted({p.exit_code for p in stopped}), len(stopped))


async def test_chart_helm_test_pod__readyz_and_a_websocket_round_trip(stack):
    """`helm test`'s own Pod, run as it is rendered, against the chart's Services."""
    runner = stack.runner
    web = await stack.start("web")
    for component in ("interface", "worker", "web"):
        runner.publish(f"{RELEASE}-{component}-metrics", component)
    runner.publish(f"{RELEASE}-interface", "interface")
    logs = await asyncio.to_thread(runner.run_job, "test", 120)
    print(logs.strip())
    assert "ok   websocket" in logs and "helm test: passed" in logs
    assert logs.count("ok   ") >= 5  # 2 interfaces, 1 worker, 1 web, the WebSocket
    await asyncio.to_thread(runner.stop, web)


async def test_chart_web_pod__serves_django_pages_from_the_database(stack):
    """The web Deployment's pod: gunicorn on the read-only root, the migrated PostgreSQL
    behind its readiness probe, multiprocess metrics in its in-memory emptyDir."""
    runner = stack.runner
    pod = await stack.start("web")
    try:
        page = await asyncio.to_thread(_get, f"{pod.url('http')}/accounts/login/")
        assert "<form" in page.lower()
        metrics = await asyncio.to_thread(_get, f"{pod.url('metrics')}/metrics")
        assert "channels_fleet_" in metrics
        assert await asyncio.to_thread(_get, f"{pod.url('metrics')}/readyz") == "ok\n"
    finally:
        await asyncio.to_thread(runner.stop, pod)  # preStop, SIGTERM: gunicorn exits in grace
    assert pod.exit_code == 0, f"web pod exited {pod.exit_code} after SIGTERM:\n{pod.last_logs}"
