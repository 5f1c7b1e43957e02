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

``make run`` (``python -m channels_fleet.devstack``) is the whole local stack in the
foreground, stopped cleanly by Ctrl-C: a 3-master + 3-replica Redis Cluster, the demo chat's
database migrated, 2 interfaces (ports 8001, 8002; named ``i1``, ``i2`` in the fleet's
status), 2 workers (``w1``, ``w2``) and the web tier (gunicorn, port 8000), all serving
``examples/chat``. It also listens for ``make roll-workers`` (``devroll``).

    python -m channels_fleet.devstack [--dir .run] [--project examples/chat]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .devcluster import LocalRedis, die_with_parent, free_ports
from .devroll import SOCKET_NAME as ROLL_SOCKET
from .devroll import RollControl, WorkerRoll

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


def start_demo(cluster: LocalRedis, run_dir: Path, project: Path, interfaces: int,
               workers: int, web_port: int) -> tuple[FleetStack, Callable[[], ServiceProcess]]:
    """The ``make run`` stack on fixed ports, on ``cluster``; prints where things are. Returns
    the stack and how to start one more worker (ready), for rolling them (``devroll``)."""
    stack = FleetStack(cluster.urls[:3], run_dir / "logs", project=project,
                       death_signal=signal.SIGTERM, env={
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE",
                                                 "chat_project.settings"),
        "CHAT_RUN_DIR": str(run_dir),
        "CHAT_MODERATION": os.environ.get("CHAT_MODERATION", "1"),
        "CHAT_ROLL_SOCKET": str(run_dir / ROLL_SOCKET),  # the /fleet/ page's roll button
        "CHANNELS_FLEET_ALLOWED_ORIGINS": os.environ.get("CHANNELS_FLEET_ALLOWED_ORIGINS",
                                                         "localhost,127.0.0.1"),
    })
    print("migrating the demo database...", flush=True)
    manage = [sys.executable, str(project / "manage.py")]
    stack.run(*manage, "migrate", "--noinput", "-v", "0")
    stack.run(*manage, "demo_users")  # the demo's accounts (alice, bob: demo-password)
    metrics = iter(range(9101, 9200))
    started: dict[str, int] = {}

    def start(kind: str, *args: str) -> ServiceProcess:
        # interface-1 (named i1 in the fleet's status), ..., worker-3 (w3) after a roll.
        port, n = next(metrics), started.get(kind, 0) + 1
        started[kind] = n
        return stack.spawn(kind, [*CLI, kind, *args], metrics_port=port, name=f"{kind}-{n}",
                           CHANNELS_FLEET_METRICS_PORT=str(port),
                           CHANNELS_FLEET_NAME=f"{kind[0]}{n}")

    def start_worker() -> ServiceProcess:
        # Every worker also serves the demo's background channel "moderation".
        return start("worker", "chat_project.asgi:application", "--channels", "moderation")

    for i in range(interfaces):
        start("interface", "--port", str(8001 + i))
    for _ in range(workers):
        start_worker()
    start("web", "chat_project.wsgi:application", "--port", str(web_port))
    urls = ", ".join(f"http://localhost:{8001 + i}/" for i in range(interfaces))
    names = ", ".join(p.fleet_name for p in stack.procs if p.kind != "web")
    print(
        f"\nchannels-fleet is up (logs in {run_dir}/logs/):\n"
        f"  the chat, through the interfaces:  {urls} (pages relayed to workers)\n"
        f"  the fleet, live:                   http://localhost:8001/fleet/ ({names})\n"
        f"  web tier (gunicorn, WSGI):         http://localhost:{web_port}/\n"
        f"  probes and metrics:                http://localhost:9101/metrics ... "
        f"http://localhost:{stack.procs[-1].metrics_port}/metrics\n"
        f"  Redis Cluster:                     {stack.env['CHANNELS_FLEET_REDIS_URL']}\n"
        "Roll the workers (a deploy, no socket closes): `make roll-workers` in another shell,\n"
        "or the button on /fleet/ signed in as alice (staff; alice and bob: demo-password).\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
    return stack, lambda: start_worker().wait_ready()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m channels_fleet.devstack")
    parser.add_argument("--dir", default=".run", type=Path)
    parser.add_argument("--project", default="examples/chat", type=Path)
    parser.add_argument("--interfaces", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--web-port", type=int, default=8000)
    args = parser.parse_args(argv)
    run_dir = args.dir.resolve()
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    status = 0
    cluster: LocalRedis | None = None
    stack: FleetStack | None = None
    control: RollControl | None = None
    try:
        cluster_dir = run_dir / "stack-cluster"
        shutil.rmtree(cluster_dir, ignore_errors=True)
        cluster_dir.mkdir(parents=True)
        print("starting a Redis Cluster (3 masters + 3 replicas)...", flush=True)
        cluster = LocalRedis(cluster_dir, masters=3, replicas=1).start()
        stack, start_worker = start_demo(cluster, run_dir, args.project.resolve(),
                                         args.interfaces, args.workers, args.web_port)
        control = RollControl(run_dir / ROLL_SOCKET, WorkerRoll(stack, start_worker)).start()
        while not stopping:
            problem = stack.failed()
            if problem:
                print(problem, file=sys.stderr, flush=True)
                status = 1
                break
            time.sleep(0.5)
        print("\nstopping...", flush=True)
    finally:
        if control is not None:
            control.stop()
        if stack is not None:
            stack.terminate()
            stack.close()
        if cluster is not None:
            cluster.stop()
        print("stopped.", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
