"""Local stacks of channels-fleet processes: ``make run``, the tests and the benchmarks.

:class:`ServiceProcess` is one child process (a ``channels-fleet`` service or any command) that
dies with this process (PR_SET_PDEATHSIG, even on kill -9), writes its output to a log file and
is ready when its ``/readyz`` answers 200. :class:`FleetStack` starts interfaces, workers and
web tiers of one project against one Redis as ServiceProcesses, and stops them all.

    stack = FleetStack(redis.urls, Path(".run"), project=Path("examples/chat"),
                       app="chat_project.asgi:application",
                       env={"DJANGO_SETTINGS_MODULE": "chat_project.settings"})
    iface, workers = stack.start(workers=2)
    ...
    stack.stop()

``make run`` (``examples/chat/run.py``) and ``channels-fleet dev`` are built on them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from channels_fleet.process import die_with_parent

from .ports import free_ports

CLI = [sys.executable, "-m", "channels_fleet.cli"]
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class ServiceProcess:
    """One child process with its log file, its ports and its readiness."""

    def __init__(self, name: str, args: list[str], *, env: Mapping[str, str], cwd: Path,
                 log: Path, metrics_port: int | None = None, port: int | None = None,
                 ready_url: str | None = None, death_signal: int = signal.SIGKILL) -> None:
        self.name = name
        self.args = args
        #: Its name in the fleet's status (CHANNELS_FLEET_NAME: ``w1``), else ``name``.
        self.fleet_name = env.get("CHANNELS_FLEET_NAME") or name
        self.port = port  # public port (interface, web), if any
        self.metrics_port = metrics_port  # /healthz, /readyz, /metrics, if any
        if ready_url is None and metrics_port is not None:
            ready_url = f"http://127.0.0.1:{metrics_port}/readyz"
        self.ready_url = ready_url  # answers 200 once it is ready
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                args, env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=lambda: die_with_parent(death_signal),
            )

    def __repr__(self) -> str:
        return f"<ServiceProcess {self.name} pid={self.pid}>"

    @property
    def kind(self) -> str:
        """What it runs: ``interface``, ``worker``, ``web``, or the command's name."""
        return self.name.rsplit("-", 1)[0]

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        """The WebSocket base URL of an interface (or web tier)."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        """An Origin a browser on this host would send."""
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def ready(self) -> bool:
        """Does its ``ready_url`` (``/readyz``) answer 200? (Without one: is it running?)"""
        if self.ready_url is None:
            return self.alive()
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> ServiceProcess:
        """Wait until ready; RuntimeError (with the log's tail) if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited {self.popen.returncode}:\n{self.tail()}")
            if self.ready():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {timeout:g}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` of its log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def terminate_and_wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (a graceful drain), then SIGKILL if it outlives ``timeout``."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def stop(self) -> None:
        """SIGKILL and reap."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(timeout=10)


class FleetStack:
    """Interfaces, workers and web tiers of one project against one Redis, as child processes.

    ``project`` is first on their ``PYTHONPATH`` and their working directory (unless ``cwd``);
    ``app`` the worker's default ASGI app; ``env`` is added to this process's environment. Every
    child is forked by one thread that lives as long as the stack: PR_SET_PDEATHSIG fires when
    the *thread* that forked a child ends, and callers may run on short-lived threads.
    """

    def __init__(self, redis_urls: Iterable[str], run_dir: Path, *, project: Path,
                 app: str = "", env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 death_signal: int = signal.SIGKILL) -> None:
        self.run_dir = run_dir
        self.project = project
        self.cwd = cwd or project
        self.app = app
        self.death_signal = death_signal
        self.env: dict[str, str] = {
            **os.environ,
            "CHANNELS_FLEET_REDIS_URL": ",".join(redis_urls),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(project),
                                                         os.environ.get("PYTHONPATH")])),
            **(env or {}),
        }
        self.procs: list[ServiceProcess] = []  # every process started, for stop()
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="fleet-spawner")

    # -- starting --------------------------------------------------------------------------

    def spawn(self, kind: str, args: list[str], *, port: int | None = None,
              metrics_port: int | None = None, name: str = "", **env: str) -> ServiceProcess:
        """Start ``args`` as ``name`` (``<kind>-<n>``) with this stack's environment plus
        ``env``."""
        name = name or f"{kind}-{len(self.procs)}"
        proc = self._spawner.submit(
            ServiceProcess, name, args, env={**self.env, **env}, cwd=self.cwd,
            log=self.run_dir / f"{name}.log", metrics_port=metrics_port, port=port,
            death_signal=self.death_signal,
        ).result()
        self.procs.append(proc)
        return proc

    def service(self, service: str, args: Sequence[str] = (), *, public: bool = False,
                wait: bool = True, name: str = "", env: Mapping[str, str] | None = None
                ) -> ServiceProcess:
        """``channels-fleet SERVICE ARGS`` on free ports (``public``: a --port too)."""
        port, metrics = free_ports(2)
        options = ["--port", str(port)] if public else []
        proc = self.spawn(service, [*CLI, service, *args, *options],
                          port=port if public else None, metrics_port=metrics, name=name,
                          CHANNELS_FLEET_METRICS_PORT=str(metrics), **(env or {}))
        return proc.wait_ready() if wait else proc

    def interface(self, *, wait: bool = True, name: str = "", **env: str) -> ServiceProcess:
        return self.service("interface", public=True, wait=wait, name=name, env=env)

    def worker(self, *args: str, app: str = "", wait: bool = True, name: str = "",
               **env: str) -> ServiceProcess:
        return self.service("worker", [app or self.app, *args], wait=wait, name=name, env=env)

    def web(self, wsgi_app: str, *args: str, wait: bool = True, name: str = "",
            **env: str) -> ServiceProcess:
        return self.service("web", [wsgi_app, *args], public=True, wait=wait, name=name,
                            env=env)

    def start(self, workers: int = 1, **env: str
              ) -> tuple[ServiceProcess, list[ServiceProcess]]:
        """An interface and ``workers`` workers, started together and all ready; ``env`` is
        set for each of them."""
        iface = self.interface(wait=False, **env)
        started = [self.worker(wait=False, **env) for _ in range(workers)]
        self.wait_ready(iface, *started)
        return iface, started

    def run(self, *args: str, timeout: float = 120) -> str:
        """Run a one-off command (``manage.py migrate``) in the project; its stdout."""
        done = subprocess.run(list(args), env=self.env, cwd=self.cwd, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done.stdout

    def wait_ready(self, *procs: ServiceProcess, timeout: float = READY_TIMEOUT) -> None:
        """Wait for ``procs`` (every process started, if none given) to be ready."""
        deadline = time.monotonic() + timeout
        for proc in procs or tuple(self.procs):
            proc.wait_ready(max(0.1, deadline - time.monotonic()))

    # -- watching and stopping ---------------------------------------------------------------

    def failed(self) -> str | None:
        """The first process that exited, as a sentence, or None."""
        for proc in list(self.procs):  # a roll may retire one meanwhile
            if not proc.alive():
                return f"{proc.name} exited with {proc.popen.returncode} (see {proc.log})"
        return None

    def logs(self, kind: str) -> str:
        """Everything the ``kind`` processes logged so far."""
        return "".join(p.log.read_text(errors="replace") for p in self.procs if p.kind == kind)

    def retire(self, proc: ServiceProcess, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM ``proc`` (it drains), wait for it, and forget it: a rolled worker's exit is
        no failure. Returns its exit status."""
        code = proc.terminate_and_wait(timeout)
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)
        return code

    def terminate(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM every process (they drain), then SIGKILL what outlives ``timeout``."""
        for proc in self.procs:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            if proc.terminate_and_wait(max(0.1, deadline - time.monotonic())) == -signal.SIGKILL:
                print(f"{proc.name} did not stop in time: killed", flush=True)

    def stop(self) -> None:
        """SIGKILL every process still running."""
        for proc in self.procs:
            proc.stop()
        self.procs.clear()

    def close(self) -> None:
        """Stop everything; the stack cannot start processes afterwards."""
        self.stop()
        self._spawner.shutdown()
