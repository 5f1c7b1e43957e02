"""The local stack the live dashboard tests scrape: real interface, worker and web processes.

Each service is started the way it runs in a pod (``python -m channels_fleet.cli ...``), on the
real Redis Cluster, with its probes/metrics on a port of its own. Nothing is added around them:
the queue collector, handler timing and the web tier's multiprocess mode are the services' own,
so a service that stops exporting something fails the dashboard test.
"""

from __future__ import annotations

import os
from pathlib import Path

from support.split import APP, PROJECT

from channels_fleet.dev.stack import FleetStack, ServiceProcess

ROOT = Path(__file__).resolve().parents[3]
WEBAPP = Path(__file__).resolve().parent / "webapp"


class LiveStack:
    """The split test project's services, named as pods (``interface-0``, ``worker-1``)."""

    def __init__(self, redis_urls: list[str], workdir: Path) -> None:
        self.stack = FleetStack(redis_urls, workdir, project=PROJECT, app=APP, env={
            "PYTHONPATH": os.pathsep.join([str(PROJECT), str(WEBAPP), str(ROOT / "src"),
                                           str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "splitproject.settings",
            "SPLIT_CLUSTER": "1",
            "CHANNELS_FLEET_LOG_LEVEL": "WARNING",
        })
        self.stack.env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    @property
    def services(self) -> list[ServiceProcess]:
        return self.stack.procs

    def interface(self, name: str, **env: str) -> ServiceProcess:
        return self.stack.interface(wait=False, name=name, **env)

    def worker(self, name: str, *options: str) -> ServiceProcess:
        return self.stack.worker(*options, wait=False, name=name)

    def web(self, name: str, **env: str) -> ServiceProcess:
        """``channels-fleet web`` (2 gunicorn workers) serving a tiny WSGI app."""
        return self.stack.web("fleetweb_app:raw", "--workers", "2", wait=False, name=name,
                              **env)

    def wait_ready(self, timeout: float = 60) -> None:
        self.stack.wait_ready(timeout=timeout)

    def stop(self) -> None:
        self.stack.close()
