"""The demo chat (examples/chat) as local processes, behind the readiness-aware balancer.

``LocalStack`` is the ``Stack`` adapter of tests/e2e/scenarios.py for real ``channels-fleet``
interface and worker processes on this machine (a ``FleetStack``): 2 interfaces behind
``Balancer`` (the Service), workers started and SIGTERMed as the scenarios ask. Every child
dies with pytest even on kill -9, and ``close()`` kills whatever is still running.

The demo lets anonymous users read a room but not post, so the clients carry the session
cookie of the demo user alice (created in the stack's own SQLite database).
"""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from pathlib import Path

from channels_fleet.dev.stack import FleetStack, ServiceProcess

from .. import scenarios
from .balancer import Backend, Balancer

ROOT = Path(__file__).resolve().parents[3]
PROJECT = ROOT / "examples" / "chat"
APP = "chat_project.asgi:application"
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


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _backend(proc: ServiceProcess) -> Backend:
    assert proc.port is not None and proc.metrics_port is not None
    return Backend(proc.name, proc.port, proc.metrics_port)


class LocalStack:
    """``Stack`` adapter (tests/e2e/scenarios.py) over local processes."""

    def __init__(self, redis_urls: list[str], run_dir: Path) -> None:
        self.run_dir = run_dir
        self.fleet = FleetStack(redis_urls, run_dir, project=PROJECT, app=APP, env={
            "DJANGO_SETTINGS_MODULE": "chat_project.settings",
            "CHAT_RUN_DIR": str(run_dir),
            "CHANNELS_FLEET_DRAIN_TIMEOUT": DRAIN_TIMEOUT,
            "CHANNELS_FLEET_LOG_LEVEL": "INFO",
        })
        self.interfaces: list[ServiceProcess] = []
        self.workers: list[ServiceProcess] = []
        self.balancer = Balancer()
        self.base_url = ""
        self.chat = scenarios.ChatProtocol()
        self._stopping: set[asyncio.Task[int]] = set()

    @property
    def procs(self) -> list[ServiceProcess]:
        """Every process started, for close() and for a failed scenario's report."""
        return self.fleet.procs

    # --- lifecycle (blocking; called from the fixture) -------------------------------------

    def start(self, interfaces: int = 2, workers: int = 1) -> LocalStack:
        manage = [sys.executable, str(PROJECT / "manage.py")]
        self.fleet.run(*manage, "migrate", "--noinput", "-v", "0")
        self.fleet.run(*manage, "demo_users")
        session = self.fleet.run(*manage, "shell", "-c", SESSION_SCRIPT)
        self.chat = scenarios.ChatProtocol(
            headers=(("Cookie", f"sessionid={session.split()[-1]}"),))
        self.base_url = f"http://127.0.0.1:{self.balancer.start()}"
        self.interfaces = [self.fleet.interface(wait=False) for _ in range(interfaces)]
        self.fleet.wait_ready(*self.interfaces)
        self.balancer.backends = tuple(_backend(p) for p in self.interfaces)
        self.workers = [self.fleet.worker(wait=False) for _ in range(workers)]
        self.fleet.wait_ready(*self.workers)
        return self

    def close(self) -> None:
        self.balancer.stop()
        self.fleet.close()

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
            self.workers.append(await asyncio.to_thread(self.fleet.worker))
        surplus, self.workers = self.workers[count:], self.workers[:count]
        await asyncio.gather(*(asyncio.to_thread(w.terminate_and_wait, STOP_TIMEOUT)
                               for w in surplus))

    async def stop_worker(self, instance: str) -> None:
        (proc,) = [w for w in self.workers if w.name == instance]
        self.workers.remove(proc)
        task = asyncio.create_task(asyncio.to_thread(proc.terminate_and_wait, STOP_TIMEOUT))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def restart_interfaces(self) -> None:
        for old in list(self.interfaces):
            new = await asyncio.to_thread(self.fleet.interface)
            self.interfaces.append(new)
            # A terminating pod leaves the endpoints at once; its drain follows.
            self.balancer.backends = tuple(_backend(p) for p in self.interfaces if p is not old)
            await asyncio.to_thread(old.terminate_and_wait, STOP_TIMEOUT)
            self.interfaces.remove(old)

    async def restart_workers(self) -> None:
        for old in list(self.workers):
            self.workers.append(await asyncio.to_thread(self.fleet.worker))
            # It drains: its sockets are re-homed.
            await asyncio.to_thread(old.terminate_and_wait, STOP_TIMEOUT)
            self.workers.remove(old)
