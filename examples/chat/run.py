"""``make run``: the demo chat on the whole local stack, in the foreground; Ctrl-C stops it.

A 3-master + 3-replica Redis Cluster, the demo's database migrated, 2 interfaces (ports 8001,
8002; ``i1``, ``i2`` in the fleet's status), 2 workers (``w1``, ``w2``) and the web tier
(gunicorn, port 8000), all serving this project; the interfaces share the resume key kept in
``.run/resume-key`` (resumable sessions: the chat's FleetSocket). It listens for
``make roll-workers`` and ``make roll-interfaces`` (``fleetview/roll.py``) on
``.run/devstack.sock``.

    python examples/chat/run.py [--dir .run]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from fleetview.roll import SOCKET_NAME as ROLL_SOCKET
from fleetview.roll import InterfaceRoll, RollControl, WorkerRoll

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.resume_key import FILE_NAME as RESUME_KEY_FILE
from channels_fleet.dev.resume_key import resume_key
from channels_fleet.dev.stack import CLI, FleetStack, ServiceProcess

PROJECT = Path(__file__).resolve().parent


def service_env(kind: str, n: int, metrics_port: int, key: str) -> dict[str, str]:
    """What the ``n``-th ``kind`` process gets on top of the stack's environment: its metrics
    port, its name (``i1``, ``w3``) and, for interfaces only, the run dir's resume key (every
    interface the same, so a session resumes on either; workers never check tokens)."""
    env = {"CHANNELS_FLEET_METRICS_PORT": str(metrics_port),
           "CHANNELS_FLEET_NAME": f"{kind[0]}{n}"}
    if kind == "interface":
        env["CHANNELS_FLEET_RESUME_KEY"] = key
    return env


class Demo(NamedTuple):
    """The ``make run`` stack, and how to start one more process of it (ready), for rolls."""

    stack: FleetStack
    start_worker: Callable[[], ServiceProcess]
    start_interface: Callable[[int], ServiceProcess]  # on that port (a rolled one's)


def start_demo(cluster: LocalRedis, run_dir: Path, project: Path, interfaces: int,
               workers: int, web_port: int) -> Demo:
    """The ``make run`` stack on fixed ports, on ``cluster``; prints where things are."""
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
    key = resume_key(run_dir)

    def start(kind: str, *args: str, public: int | None = None) -> ServiceProcess:
        # interface-1 (named i1 in the fleet's status), ..., worker-3 (w3) after a roll.
        port, n = next(metrics), started.get(kind, 0) + 1
        started[kind] = n
        if public is not None:
            args = (*args, "--port", str(public))
        return stack.spawn(kind, [*CLI, kind, *args], port=public, metrics_port=port,
                           name=f"{kind}-{n}", **service_env(kind, n, port, key))

    def start_worker() -> ServiceProcess:
        # Every worker also serves the demo's background channel "moderation".
        return start("worker", "chat_project.asgi:application", "--channels", "moderation")

    for i in range(interfaces):
        start("interface", public=8001 + i)
    for _ in range(workers):
        start_worker()
    start("web", "chat_project.wsgi:application", public=web_port)
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
        f"  resumable sessions (FleetSocket):  on, key in {run_dir / RESUME_KEY_FILE}\n"
        "Roll the workers (a deploy, no socket closes): `make roll-workers` in another shell,\n"
        "or the button on /fleet/ signed in as alice (staff; alice and bob: demo-password).\n"
        "Roll the interfaces (the pages' sessions resume, no message lost): "
        "`make roll-interfaces`.\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
    return Demo(stack, lambda: start_worker().wait_ready(),
                lambda port: start("interface", public=port).wait_ready())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python examples/chat/run.py")
    parser.add_argument("--dir", default=".run", type=Path)
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
        demo = start_demo(cluster, run_dir, PROJECT, args.interfaces, args.workers,
                          args.web_port)
        stack = demo.stack
        busy = threading.Lock()  # one roll at a time, of either kind
        control = RollControl(run_dir / ROLL_SOCKET, WorkerRoll(stack, demo.start_worker, busy),
                              InterfaceRoll(stack, demo.start_interface, busy)).start()
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
