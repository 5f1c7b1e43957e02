"""Real service processes for the feature tests: ``channels-fleet interface|worker|web`` and
one-off Django processes, started with PR_SET_PDEATHSIG and killed at teardown."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from channels_fleet.devcluster import free_ports


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class Stack:
    """Processes sharing one environment (settings module, database, Redis URLs)."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env, self.tmp = env, tmp
        self.procs: list[tuple[subprocess.Popen, int, Path]] = []

    def start(self, *args: str) -> int:
        """Start ``channels-fleet ARGS...``; an interface or web process gets a free --port,
        which is returned (0 for a worker)."""
        port, metrics = free_ports(2)
        if args[0] in ("interface", "web"):
            args = (*args, "--port", str(port))
        else:
            port = 0
        log = self.tmp / f"{args[0]}-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "channels_fleet.cli", *args],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp, preexec_fn=_die_with_parent,
                env={**self.env, "CHANNELS_FLEET_METRICS_PORT": str(metrics)})
        self.procs.append((proc, metrics, log))
        return port

    def wait_ready(self, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        for proc, metrics, log in self.procs:
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{proc.args} not ready:\n{log.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=1):
                        break
                except OSError:
                    time.sleep(0.1)

    def stop(self) -> None:
        for proc, _, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)

    def django(self, script: str) -> str:
        """Run ``script`` in a fresh Django process (the web tier's view of the world); return
        the last line it printed (what libraries log to stdout before it is ignored)."""
        done = subprocess.run(
            [sys.executable, "-c", "import django; django.setup()\n" + script],
            env=self.env, cwd=self.tmp, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.strip().splitlines()
        return lines[-1] if lines else ""
