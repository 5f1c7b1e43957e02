"""A Django Channels project written without channels-fleet in mind (``project/``), run unchanged
as real ``channels-fleet interface | worker | web`` processes.

Its settings name channels_redis with ``(host, port)`` tuples read from ``REDIS_HOST`` /
``REDIS_PORT`` (as teams write them); ``mysite.settings_dev`` swaps in InMemoryChannelLayer.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from support.sites import Site
from websockets.asyncio.client import connect

PROJECT = Path(__file__).resolve().parent / "project"
PASSWORD = "foreign-password"

CREATE_USER = f"""
from django.contrib.auth.models import User
User.objects.create_user("alice", password="{PASSWORD}")
"""


def pythonpath() -> str:
    """The project first, then the caller's path (a checkout under test before an installed
    channels-fleet)."""
    return os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))


@contextmanager
def foreign_stack(tmp: Path, project_redis: str, fleet_redis: list[str], *, workers: int = 1,
                  settings: str = "mysite.settings", worker_args: tuple[str, ...] = (),
                  settings_in_env: bool = True, **env: str) -> Iterator[Site]:
    """Interface, web tier and ``workers`` workers for the project; its channels_redis layer on
    ``project_redis`` (one URL), the relay on ``fleet_redis``; SQLite migrated, user alice.
    ``settings_in_env=False``: the services get no DJANGO_SETTINGS_MODULE (asgi.py / wsgi.py
    name ``mysite.settings`` themselves)."""
    where = urlsplit(project_redis)
    env = {**os.environ, "PYTHONPATH": pythonpath(), "DJANGO_SETTINGS_MODULE": settings,
           "SQLITE_PATH": str(tmp / "db.sqlite3"), "REDIS_HOST": str(where.hostname),
           "REDIS_PORT": str(where.port), "CHANNELS_FLEET_REDIS_URL": ",".join(fleet_redis),
           **env}
    subprocess.run([sys.executable, str(PROJECT / "manage.py"), "migrate", "-v", "0"],
                   env=env, cwd=tmp, check=True, timeout=60, capture_output=True)
    stack = Site(env, tmp)
    stack.django(CREATE_USER)
    if not settings_in_env:
        del stack.env["DJANGO_SETTINGS_MODULE"]
    try:
        stack.port = stack.start("interface")
        stack.web = stack.start("web", "mysite.wsgi:application")
        for _ in range(workers):
            stack.start("worker", "mysite.asgi:application", *worker_args)
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


def ws(stack: Site, path: str, cookie: str | None = None, **kwargs: Any) -> Any:
    """A WebSocket to the interface, from a page of the same site (AllowedHostsOriginValidator)."""
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
    return connect(f"ws://127.0.0.1:{stack.port}{path}", origin=f"http://127.0.0.1:{stack.port}",
                   additional_headers=headers, open_timeout=10, **kwargs)


async def recv(sock: Any, timeout: float = 10) -> Any:
    return await asyncio.wait_for(sock.recv(), timeout)


def logs(stack: Site, kind: str) -> str:
    """Everything the ``kind`` processes (interface, web, worker) logged so far."""
    return stack.logs(kind)
