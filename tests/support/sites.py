"""A Django project run as real ``channels-fleet`` processes, for the feature, demo and
foreign-project tests: a :class:`~channels_fleet.dev.stack.FleetStack` plus the ports the tests
talk to and one-off Django processes (the web tier's view of the world).

    site = Site(env, tmp)                 # env: the processes' whole environment
    site.port = site.start("interface")
    site.start("worker", "chat_project.asgi:application", "--channels", "moderation")
    site.wait_ready()
    ...
    site.stop()
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from channels_fleet.dev.stack import FleetStack


class Site:
    """Processes sharing one environment (settings module, database, Redis URLs), run in
    ``tmp``. Tests may note what they need on it (``site.cookie``)."""

    def __init__(self, env: Mapping[str, str], tmp: Path) -> None:
        urls = env["CHANNELS_FLEET_REDIS_URL"].split(",")
        self.stack = FleetStack(urls, tmp, project=tmp, env=env)
        self.port = 0  # the interface's, once started
        self.ports: list[int] = []  # every interface's, if a test starts several
        self.web = 0  # the web tier's, once started

    @property
    def env(self) -> dict[str, str]:
        return self.stack.env

    def start(self, service: str, *args: str, **env: str) -> int:
        """Start ``channels-fleet SERVICE ARGS`` (``env`` added to its environment); an
        interface or web tier gets a free --port, which is returned (0 for a worker)."""
        if service == "interface":
            return self.stack.interface(wait=False, **env).port or 0
        if service == "web":
            return self.stack.web(*args, wait=False, **env).port or 0
        app, *rest = args
        self.stack.worker(*rest, app=app, wait=False, **env)
        return 0

    def wait_ready(self, timeout: float = 40) -> None:
        self.stack.wait_ready(timeout=timeout)

    def stop(self) -> None:
        self.stack.close()

    def logs(self, kind: str) -> str:
        """Everything the ``kind`` processes (interface, web, worker) logged so far."""
        return self.stack.logs(kind)

    def django(self, script: str) -> str:
        """Run ``script`` in a fresh Django process; return the last line it printed (what
        libraries log to stdout before it is ignored)."""
        out = self.stack.run(sys.executable, "-c", "import django; django.setup()\n" + script,
                             timeout=30)
        lines = out.strip().splitlines()
        return lines[-1] if lines else ""
