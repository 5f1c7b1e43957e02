"""The local stack the live dashboard tests scrape: real interface, worker and web processes.

Each service is started the way it runs in a pod (``python -m channels_fleet.cli ...``), on the
real Redis Cluster, with its probes/metrics on a port of its own. Nothing is added around them:
the queue collector, handler timing and the web tier's multiprocess mode are the services' own,
so a service that stops exporting something fails the dashboard test.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from channels_fleet.devcluster import free_ports

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
PROJECT = ROOT / "tests" / "integration" / "split" / "testproject"
APP = "splitproject.asgi:application"
WEBAPP = HERE / "webapp"


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


@dataclass
class Service:
    name: str
    metrics_port: int
    process: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@dataclass
class LiveStack:
    redis_urls: list[str]
    workdir: Path
    services: list[Service] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "CHANNELS_FLEET_REDIS_URL": ",".join(self.redis_urls),
            "PYTHONPATH": os.pathsep.join([str(PROJECT), str(WEBAPP), str(ROOT / "src"),
                                           str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "splitproject.settings",
            "SPLIT_CLUSTER": "1",
            "CHANNELS_FLEET_LOG_LEVEL": "WARNING",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(extra)
        return env

    def _start(self, name: str, args: list[str], *, port: int | None = None,
               **env: str) -> Service:
        (metrics_port,) = free_ports(1)
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                args, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT,
                env=self.env(CHANNELS_FLEET_METRICS_PORT=str(metrics_port), **env),
                preexec_fn=_die_with_parent,
            )
        service = Service(name, metrics_port, process, log, port)
        self.services.append(service)
        return service

    def interface(self, name: str, **env: str) -> Service:
        (port,) = free_ports(1)
        return self._start(name, [sys.executable, "-m", "channels_fleet.cli", "interface",
                                  "--port", str(port)], port=port, **env)

    def worker(self, name: str, *options: str) -> Service:
        return self._start(name, [sys.executable, "-m", "channels_fleet.cli", "worker", APP,
                                  *options])

    def web(self, name: str, **env: str) -> Service:
        """``channels-fleet web`` (2 gunicorn workers) serving a tiny WSGI app."""
        (port,) = free_ports(1)
        return self._start(name, [sys.executable, "-m", "channels_fleet.cli", "web",
                                  "fleetweb_app:raw", "--port", str(port), "--workers", "2"],
                           port=port, **env)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.services)
        while pending and time.monotonic() < deadline:
            for service in list(pending):
                if service.process.poll() is not None:
                    raise RuntimeError(f"{service.name} exited {service.process.returncode}:\n"
                                       f"{service.tail()}")
                if service.ready():
                    pending.remove(service)
            time.sleep(0.1)
        if pending:
            raise RuntimeError("not ready: " + "; ".join(
                f"{s.name}:\n{s.tail()}" for s in pending))

    def stop(self) -> None:
        for service in self.services:
            service.stop()
