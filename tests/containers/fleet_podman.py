"""A thin wrapper over the podman CLI, with the options this sandbox (and production) needs.

Every container runs as the image's non-root user on a read-only root filesystem, with a
tmpfs at /tmp only, no capabilities and no privilege escalation, as the Helm chart runs it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TAG = "latest"
IMAGES = {
    name: f"localhost/channels-fleet-{name}:{TAG}" for name in ("interface", "project", "chat")
}
UID = 10001

# The sandbox refuses podman's default rlimits and crun; runc with these limits works.
GLOBAL = ["--runtime", "runc"]
LIMITS = ["--ulimit", "nproc=4096:4096", "--ulimit", "nofile=4096:4096"]
HARDENED = [
    "--read-only",
    "--read-only-tmpfs=false",
    "--tmpfs",
    "/tmp:rw,size=64m,mode=1777",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *GLOBAL, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def unusable_reason() -> str | None:
    """Why podman cannot run containers on this machine, or None when it can."""
    if shutil.which("podman") is None or shutil.which("runc") is None:
        return "podman/runc not installed (make podman)"
    try:
        podman("info", timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return f"podman info failed: {getattr(exc, 'stderr', '') or exc}".splitlines()[0]
    return None


def run(image: str, *args: str, entrypoint: str | None = None, env: dict | None = None,
        user: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a hardened container to completion and return what it printed."""
    opts = [*LIMITS, *HARDENED, "--rm", "--network", "none"]
    if user is not None:
        opts += ["--user", user]
    if entrypoint is not None:
        opts += ["--entrypoint", entrypoint]
    for key, value in (env or {}).items():
        opts += ["--env", f"{key}={value}"]
    return podman("run", *opts, image, *args, timeout=timeout, check=False)


@dataclass
class Service:
    """A detached, hardened container on the host network (reaches the loopback Redis)."""

    image: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    name: str = field(default_factory=lambda: f"fleet-test-{uuid.uuid4().hex[:10]}")
    started_at: float = 0.0

    def start(self) -> Service:
        opts = [*LIMITS, *HARDENED, "--detach", "--network", "host", "--name", self.name]
        for key, value in self.env.items():
            opts += ["--env", f"{key}={value}"]
        for volume in self.volumes:
            opts += ["--volume", volume]
        self.started_at = time.monotonic()
        podman("run", *opts, self.image, *self.args)
        return self

    def wait_ready(self, metrics_port: int, timeout: float = 60) -> float:
        """Wait until /readyz answers 200; returns seconds since ``podman run``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"{self.name} exited:\n{self.logs()[-3000:]}")
            if http_get(metrics_port, "/readyz")[0] == 200:
                return time.monotonic() - self.started_at
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready in {timeout}s:\n{self.logs()[-3000:]}")

    def running(self) -> bool:
        out = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return out.stdout.strip() == "true"

    def exec(self, *args: str) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *args, check=False)

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def exit_code(self) -> int | None:
        out = podman("inspect", "--format", "{{.State.ExitCode}}", self.name, check=False)
        return int(out.stdout.strip()) if out.returncode == 0 else None

    def stop(self, timeout: int = 30) -> float:
        """``podman stop``: SIGTERM to PID 1 (tini), SIGKILL after ``timeout``; returns seconds."""
        t0 = time.monotonic()
        podman("stop", "--time", str(timeout), self.name, timeout=timeout + 30, check=False)
        return time.monotonic() - t0

    def remove(self) -> None:
        """Stop (drain: its sockets and heartbeat leave the shared Redis cleanly), then remove."""
        podman("rm", "--force", "--time", "5", self.name, timeout=60, check=False)


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)
