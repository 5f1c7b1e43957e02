"""The local stack the live dashboard test scrapes: real interface, worker and web processes.

Each service is started the way it runs in a pod (``python -m channels_fleet.cli ...``), on the
real Redis Cluster, with its probes/metrics on a port of its own. Where the services do not yet
do an observability step themselves, the step is added here explicitly and reported (``gaps``):

- workers: ``instrument_consumers()`` applied before the worker's own ``main`` (handler latency);
- queue metrics: the standalone exporter ``python -m channels_fleet.queue_metrics``;
- web tier: gunicorn with ``channels_fleet.web_metrics`` hooks (multiprocess mode).
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


def _source(*parts: str) -> str:
    path = ROOT.joinpath(*parts)
    return path.read_text() if path.exists() else ""


def workers_instrument_consumers() -> bool:
    return "instrument_consumers" in (
        _source("services", "worker", "main.py") + _source("src", "channels_fleet", "host.py"))


def services_collect_queue_metrics() -> bool:
    return "QueueCollector" in (
        _source("services", "worker", "main.py") + _source("services", "interface", "main.py")
        + _source("services", "_common.py") + _source("src", "channels_fleet", "host.py"))


def web_uses_multiprocess() -> bool:
    return "setup_multiprocess" in _source("services", "web", "main.py")


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
    gaps: list[str] = field(default_factory=list)

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
        if workers_instrument_consumers():
            args = [sys.executable, "-m", "channels_fleet.cli", "worker", APP, *options]
        else:
            self._gap("workers: instrument_consumers() applied by the test before the "
                      "worker's main (services/worker does not call it yet)")
            args = [sys.executable, "-c",
                    "import sys\n"
                    "from channels_fleet.consumer_metrics import instrument_consumers\n"
                    "instrument_consumers()\n"
                    "from channels_fleet.cli import main\n"
                    f"sys.exit(main(['worker', {APP!r}, *{list(options)!r}]))\n"]
        return self._start(name, args)

    def queue_exporter(self, interval: float = 5.0) -> Service | None:
        if services_collect_queue_metrics():
            return None
        self._gap("queue metrics: standalone exporter (python -m channels_fleet.queue_metrics); "
                  "interfaces/workers do not run QueueCollector yet")
        return self._start("queue-exporter",
                           [sys.executable, "-m", "channels_fleet.queue_metrics",
                            "--interval", str(interval)])

    def web(self, name: str) -> Service:
        (port,) = free_ports(1)
        if web_uses_multiprocess():
            # The service wraps the app with instrument_wsgi itself: give it the bare one.
            wrapped = "instrument_wsgi" in (ROOT / "services" / "web" / "main.py").read_text()
            app = "fleetweb_app:raw" if wrapped else "fleetweb_app:application"
            args = [sys.executable, "-m", "channels_fleet.cli", "web", app,
                    "--port", str(port), "--workers", "2"]
            return self._start(name, args, port=port)
        self._gap("web: gunicorn with channels_fleet.web_metrics hooks "
                  "(services/web does not use multiprocess mode yet)")
        (metrics_port,) = free_ports(1)
        service = self._start(
            name,
            [sys.executable, "-m", "gunicorn", "-c", str(WEBAPP / "fleetweb_gunicorn.py"),
             "fleetweb_app:application"],
            port=port, FLEETWEB_PORT=str(port), FLEETWEB_METRICS_PORT=str(metrics_port),
            FLEETWEB_PROM_DIR=str(self.workdir / f"{name}-prom"),
        )
        service.metrics_port = metrics_port
        return service

    def _gap(self, text: str) -> None:
        if text not in self.gaps:
            self.gaps.append(text)

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
