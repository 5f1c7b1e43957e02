"""The split test project (``tests/integration/split/testproject``) as real processes.

    stack = split_stack(redis_cluster.urls[:3], tmp_path)
    iface, workers = stack.start(workers=2)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import channels_fleet
from channels_fleet.dev.stack import FleetStack, ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "integration" / "split" / "testproject"
APP = "splitproject.asgi:application"
#: Where this test process imported channels_fleet from: its children import the same code (a
#: relative ``PYTHONPATH=src`` would name a directory of the project, their working directory,
#: and they would get whatever the virtualenv's install points at).
SOURCE = Path(channels_fleet.__file__).resolve().parents[1]
#: A fleet's session key for resumable sessions (tests/integration/resume): 48 characters.
RESUME_KEY = "resume-tests-key-0123456789abcdef0123456789abcde"


def split_stack(urls: list[str], tmp: Path, *, cluster: bool = True, **env: str) -> FleetStack:
    """Interfaces and workers of the split test project on ``urls`` (a Redis Cluster unless
    ``cluster`` is False), logging to ``tmp``; short drains."""
    base = {
        "DJANGO_SETTINGS_MODULE": "splitproject.settings",
        "CHANNELS_FLEET_LOG_LEVEL": "INFO",
        "CHANNELS_FLEET_DRAIN_TIMEOUT": "8",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PROJECT), str(SOURCE), os.environ.get("PYTHONPATH")])),
    }
    if cluster:
        base["SPLIT_CLUSTER"] = "1"
    return FleetStack(urls, tmp, project=PROJECT, app=APP, env={**base, **env})


def start_resumable(stack: FleetStack, *, interfaces: int = 2, workers: int = 1,
                    resume: bool = True, window: float | None = None
                    ) -> tuple[list[ServiceProcess], list[ServiceProcess]]:
    """``interfaces`` interfaces (with RESUME_KEY unless not ``resume``) and ``workers`` workers
    (a resume window of ``window`` seconds, else the default), all ready."""
    key = {"CHANNELS_FLEET_RESUME_KEY": RESUME_KEY} if resume else {}
    ifaces = [stack.interface(wait=False, **key) for _ in range(interfaces)]
    env = {} if window is None else {"CHANNELS_FLEET_RESUME_WINDOW": f"{window:g}"}
    started = [stack.worker(wait=False, **env) for _ in range(workers)]
    stack.wait_ready(*ifaces, *started)
    return ifaces, started


def wait_records(redis: Any, room: str, count: int, timeout: float) -> list[str]:
    """The disconnect handlers the split test project recorded for ``room`` (``tag:code``),
    once ``count`` are there or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        got = [v.decode() for v in redis.lrange(f"split:disconnects:{room}", 0, -1)]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)
