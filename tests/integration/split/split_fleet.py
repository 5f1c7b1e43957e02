"""Helpers of the split tests: real interface and worker processes (the ``channels-fleet`` CLI).

``Fleet`` starts them as subprocesses with PR_SET_PDEATHSIG (they die with pytest even if
pytest is killed), waits for ``/readyz``, and kills every one of them at teardown.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from redis.cluster import RedisCluster

from channels_fleet.devcluster import free_ports

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "testproject"
CLI = [sys.executable, "-m", "channels_fleet.cli"]
APP = "splitproject.asgi:application"


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class Proc:
    """One service process with its public and probe ports."""

    def __init__(self, kind: str, args: list[str], env: dict[str, str], log: Path,
                 port: int | None, metrics_port: int) -> None:
        self.kind = kind
        self.port = port
        self.metrics_port = metrics_port
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, env=env, cwd=PROJECT, stdout=self._log_file, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1
            ) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60) -> Proc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.popen.returncode}:\n{self.tail()}")
            if self.ready():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} not ready in {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)
        self._log_file.close()


class Fleet:
    """Starts interfaces and workers against one Redis; stops them all."""

    def __init__(self, urls: list[str], cluster: bool, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.env = {
            **os.environ,
            "CHANNELS_FLEET_REDIS_URL": ",".join(urls),
            "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
            "DJANGO_SETTINGS_MODULE": "splitproject.settings",
            "CHANNELS_FLEET_LOG_LEVEL": "INFO",
            "CHANNELS_FLEET_DRAIN_TIMEOUT": "8",
        }
        if cluster:
            self.env["SPLIT_CLUSTER"] = "1"

    def interface(self, wait: bool = True, **env: str) -> Proc:
        port, metrics = free_ports(2)
        proc = self._start("interface", ["interface", "--port", str(port)], env, port, metrics)
        return proc.wait_ready() if wait else proc

    def worker(self, *args: str, wait: bool = True, **env: str) -> Proc:
        (metrics,) = free_ports(1)
        proc = self._start("worker", ["worker", APP, *args], env, None, metrics)
        return proc.wait_ready() if wait else proc

    def start(self, workers: int = 1, **env: str) -> tuple[Proc, list[Proc]]:
        """An interface and ``workers`` workers, started together and all ready; ``env`` is
        set for each of them."""
        iface = self.interface(wait=False, **env)
        started = [self.worker(wait=False, **env) for _ in range(workers)]
        for proc in (iface, *started):
            proc.wait_ready()
        return iface, started

    def _start(self, kind: str, args: list[str], env: dict[str, str], port: int | None,
               metrics: int) -> Proc:
        full_env = {**self.env, **env, "CHANNELS_FLEET_METRICS_PORT": str(metrics)}
        log = self.tmp / f"{kind}-{len(self.procs)}.log"
        proc = Proc(kind, [*CLI, *args], full_env, log, port, metrics)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs.clear()


def wait_records(redis: RedisCluster, room: str, count: int, timeout: float) -> list[str]:
    """The disconnect handlers the split test project recorded for ``room`` (``tag:code``),
    once ``count`` are there or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        got = [v.decode() for v in redis.lrange(f"split:disconnects:{room}", 0, -1)]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)
