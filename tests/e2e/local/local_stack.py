"""The demo chat (examples/chat) as local processes, behind the readiness-aware balancer.

``LocalStack`` is the ``Stack`` adapter of tests/e2e/scenarios.py for real ``channels-fleet``
interface and worker processes on this machine: 2 interfaces behind ``Balancer`` (the Service),
workers started and SIGTERMed as the scenarios ask. Every child gets PR_SET_PDEATHSIG (it dies
with pytest even on kill -9) and ``close()`` kills whatever is still running.

The demo lets anonymous users read a room but not post, so the clients carry the session
cookie of the demo user alice (created in the stack's own SQLite database).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from channels_fleet.devcluster import free_ports

from .. import scenarios
from .balancer import Backend, Balancer

ROOT = Path(__file__).resolve().parents[3]
PROJECT = ROOT / "examples" / "chat"
APP = "chat_project.asgi:application"
CLI = [sys.executable, "-m", "channels_fleet.cli"]
READY_TIMEOUT = 60.0
# Short drains (as tests/e2e/kind/values.yaml): rolling restarts finish quickly.
DRAIN_TIMEOUT = "10"
STOP_TIMEOUT = 30.0

SESSION_SCRIPT = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
user = User.objects.get(username="alice")
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(session.session_key)  # last line of the output (shell prints a banner)
"""


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class Proc:
    """One interface or worker process, its log, and its probe/metrics port."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path,
                 metrics_port: int, port: int | None = None) -> None:
        self.name, self.port, self.metrics_port, self.log = name, port, metrics_port, log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                args, env={**env, "CHANNELS_FLEET_METRICS_PORT": str(metrics_port)},
                cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def backend(self) -> Backend:
        assert self.port is not None
        return Backend(self.name, self.port, self.metrics_port)

    def wait_ready(self) -> Proc:
        probe = Backend(self.name, 0, self.metrics_port)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited {self.popen.returncode}:\n{self.tail()}")
            if probe.ready():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {READY_TIMEOUT}s:\n{self.tail()}")

    def terminate_and_wait(self) -> int:
        """SIGTERM (a graceful drain), then SIGKILL if it outlives STOP_TIMEOUT."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
        self.popen.wait(10)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


class LocalStack:
    """``Stack`` adapter (tests/e2e/scenarios.py) over local processes."""

    def __init__(self, redis_urls: list[str], run_dir: Path) -> None:
        self.run_dir = run_dir
        self.env = {
            **os.environ,
            "CHANNELS_FLEET_REDIS_URL": ",".join(redis_urls),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT),
                                                         os.environ.get("PYTHONPATH")])),
            "DJANGO_SETTINGS_MODULE": "chat_project.settings",
            "CHAT_RUN_DIR": str(run_dir),
            "CHANNELS_FLEET_DRAIN_TIMEOUT": DRAIN_TIMEOUT,
            "CHANNELS_FLEET_LOG_LEVEL": "INFO",
        }
        self.procs: list[Proc] = []  # every process ever started, for close()
        self.interfaces: list[Proc] = []
        self.workers: list[Proc] = []
        self.balancer = Balancer()
        self.base_url = ""
        self.chat = scenarios.ChatProtocol()
        self._stopping: set[asyncio.Task[int]] = set()
        # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends: children are
        # forked from this one thread, which lives as long as the stack (not from to_thread's
        # threads, which end with each test's event loop).
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="spawner")

    # --- lifecycle (blocking; called from the fixture) -------------------------------------

    def start(self, interfaces: int = 2, workers: int = 1) -> LocalStack:
        manage = [sys.executable, str(PROJECT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=self.env, check=True,
                       cwd=PROJECT)
        subprocess.run([*manage, "demo_users"], env=self.env, check=True, cwd=PROJECT,
                       capture_output=True)
        session = subprocess.run([*manage, "shell", "-c", SESSION_SCRIPT], env=self.env,
                                 check=True, cwd=PROJECT, capture_output=True, text=True)
        self.chat = scenarios.ChatProtocol(
            headers=(("Cookie", f"sessionid={session.stdout.split()[-1]}"),))
        self.base_url = f"http://127.0.0.1:{self.balancer.start()}"
        self.interfaces = [self._interface() for _ in range(interfaces)]
        self.interfaces = [p.wait_ready() for p in self.interfaces]
        self.balancer.backends = tuple(p.backend() for p in self.interfaces)
        self.workers = [self._worker() for _ in range(workers)]
        self.workers = [p.wait_ready() for p in self.workers]
        return self

    def close(self) -> None:
        self.balancer.stop()
        for proc in self.procs:
            proc.kill()
        self._spawner.shutdown()

    def _interface(self) -> Proc:
        port, metrics = free_ports(2)
        return self._spawn("interface", ["interface", "--port", str(port)], metrics, port)

    def _worker(self) -> Proc:
        (metrics,) = free_ports(1)
        return self._spawn("worker", ["worker", APP], metrics)

    def _spawn(self, kind: str, args: list[str], metrics: int, port: int | None = None) -> Proc:
        name = f"{kind}-{len(self.procs)}"
        proc = self._spawner.submit(Proc, name, [*CLI, *args], self.env,
                                    self.run_dir / f"{name}.log", metrics, port).result()
        self.procs.append(proc)
        return proc

    # --- the Stack protocol ----------------------------------------------------------------

    async def metrics(self, component: str) -> dict[str, str]:
        procs = {"interface": self.interfaces, "worker": self.workers}.get(component, [])
        out = {}
        for proc in procs:
            if not proc.alive():
                continue
            try:
                out[proc.name] = await asyncio.to_thread(
                    _get, f"http://127.0.0.1:{proc.metrics_port}/metrics")
            except OSError:
                continue
        return out

    async def scale_workers(self, count: int) -> None:
        self.workers = [w for w in self.workers if w.alive()]
        while len(self.workers) < count:
            self.workers.append(await asyncio.to_thread(lambda: self._worker().wait_ready()))
        surplus, self.workers = self.workers[count:], self.workers[:count]
        await asyncio.gather(*(asyncio.to_thread(w.terminate_and_wait) for w in surplus))

    async def stop_worker(self, instance: str) -> None:
        (proc,) = [w for w in self.workers if w.name == instance]
        self.workers.remove(proc)
        task = asyncio.create_task(asyncio.to_thread(proc.terminate_and_wait))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def restart_interfaces(self) -> None:
        for old in list(self.interfaces):
            new = await asyncio.to_thread(lambda: self._interface().wait_ready())
            self.interfaces.append(new)
            # A terminating pod leaves the endpoints at once; its drain follows.
            self.balancer.backends = tuple(p.backend() for p in self.interfaces if p is not old)
            await asyncio.to_thread(old.terminate_and_wait)
            self.interfaces.remove(old)

    async def restart_workers(self) -> None:
        for old in list(self.workers):
            self.workers.append(await asyncio.to_thread(lambda: self._worker().wait_ready()))
            await asyncio.to_thread(old.terminate_and_wait)  # drains: re-homes its sockets
            self.workers.remove(old)
