"""The shared e2e scenarios against the chart's own rendered pods, run with podman.

Where kind cannot run (no Docker engine), this is the closest thing to `helm install`: the pod
specs come from `helm template` with tests/e2e/kind/values.yaml, so the images, args, env,
Secrets, security context, emptyDirs, probes, preStop hook and grace period under test are the
chart's. See chart_pods.py for what is translated and how. Skipped (with the reason) when podman
or the images (make images) are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .. import scenarios
from .chart_pods import PodRunner, podman

ROOT = Path(__file__).resolve().parents[3]
KIND_VALUES = ROOT / "tests" / "e2e" / "kind" / "values.yaml"
IMAGES = ("localhost/channels-fleet-interface:latest", "localhost/channels-fleet-chat:latest")

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def unusable_reason() -> str | None:
    if not shutil.which("podman") or not shutil.which("runc"):
        return "podman/runc not installed (make podman)"
    if not shutil.which("redis-server"):
        return "redis-server not installed"
    try:
        for image in IMAGES:
            if podman("image", "exists", image, check=False, timeout=60).returncode != 0:
                return f"image {image} not built (make images)"
    except subprocess.TimeoutExpired:
        return "podman does not answer"
    return None


def gateway_ip() -> str:
    out = podman("network", "inspect", "podman", "--format",
                 "{{range .Subnets}}{{.Gateway}}{{end}}")
    return out.stdout.strip()


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
        for old in list(self.balancer.pods):
            new = await self.start("interface")
            self.balancer.pods.append(new)
            # A terminating pod leaves the Endpoints at once; preStop and the drain follow.
            self.balancer.pods.remove(old)
            await asyncio.to_thread(self.runner.stop, old)

    async def restart_workers(self) -> None:
        for old in self.runner.alive("worker"):
            await self.start("worker")
            await asyncio.to_thread(self.runner.stop, old)  # drains: re-homes its sockets


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def redis_for_pods(tmp_path_factory):
    reason = unusable_reason()
    if reason:
        pytest.skip(f"chart pods on podman: {reason}")
    gateway = gateway_ip()
    from .chart_pods import free_port

    port = free_port()
    # All addresses: podman creates its bridge (the gateway address) only while a container
    # runs, so binding that address before the first pod starts would fail.
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "0.0.0.0", "--save", "",
         "--appendonly", "no", "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, cwd=tmp_path_factory.mktemp("redis"))
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        yield gateway, port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
async def stack(redis_for_pods):
    from chart.helm import render  # tests/chart/helm.py: helm template of the chart

    gateway, port = redis_for_pods
    docs = render(KIND_VALUES, sets=(f"redis.url=redis://redis:{port}/0",))
    runner = PodRunner(docs, hosts={"redis": gateway})
    balancer = Balancer()
    stack = ChartStack(runner, balancer, await balancer.start())
    try:
        balancer.pods = list(await asyncio.gather(stack.start("interface"),
                                                  stack.start("interface")))
        await stack.scale_workers(1)
        yield stack
    finally:
        await balancer.close()
        await asyncio.to_thread(runner.remove_all)


async def test_chart_pods__every_scenario(stack):
    """One stack for every scenario (starting pods is the slow part)."""
    for scenario in scenarios.ALL:
        t0 = time.perf_counter()
        result = await scenario(stack)
        print(f"{scenario.__name__}: {result} ({time.perf_counter() - t0:.1f} s)")
    # Every pod stopped on the way (scale-in, worker loss, rollout) drained within its grace
    # period: none needed SIGKILL.
    stopped = [p for p in stack.runner.stopped if p.exit_code is not None]
    assert stopped and all(p.exit_code != 137 for p in stopped), [
        (p.name, p.exit_code) for p in stopped]
    print("stopped pods and exit codes:", sorted({p.exit_code for p in stopped}), len(stopped))


async def test_chart_web_pod__serves_django_pages_and_metrics(redis_for_pods):
    """The web Deployment's pod: gunicorn on the read-only root, multiprocess metrics in its
    in-memory emptyDir, a Django page on the http port."""
    from chart.helm import render

    gateway, port = redis_for_pods
    docs = render(KIND_VALUES, sets=(f"redis.url=redis://redis:{port}/0",))
    runner = PodRunner(docs, hosts={"redis": gateway})
    try:
        pod = await asyncio.to_thread(runner.wait_ready, await asyncio.to_thread(runner.start,
                                                                                 "web"))
        page = await asyncio.to_thread(_get, f"{pod.url('http')}/")
        assert "<html" in page.lower()
        metrics = await asyncio.to_thread(_get, f"{pod.url('metrics')}/metrics")
        assert "channels_fleet_" in metrics
        await asyncio.to_thread(runner.stop, pod)  # preStop, SIGTERM: gunicorn exits in grace
        assert pod.exit_code == 0, (
            f"web pod exited {pod.exit_code} after SIGTERM:\n{pod.last_logs}")
    finally:
        await asyncio.to_thread(runner.remove_all)
