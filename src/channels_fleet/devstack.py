"""``make run``: the whole local stack in the foreground, stopped cleanly by Ctrl-C.

Starts a 3-master + 3-replica Redis Cluster, migrates the demo chat's database, then runs
2 interfaces (ports 8001, 8002), 2 workers and the web tier (gunicorn, port 8000), all serving
``examples/chat``. Every child dies with this process (PR_SET_PDEATHSIG), even on kill -9.

    python -m channels_fleet.devstack [--dir .run] [--project examples/chat]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .devcluster import LocalRedis

STOP_TIMEOUT = 15.0


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class Stack:
    def __init__(self, run_dir: Path, project: Path) -> None:
        self.run_dir = run_dir
        self.project = project
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.cluster: LocalRedis | None = None
        self.env: dict[str, str] = {}

    def start(self, interfaces: int, workers: int, web_port: int) -> None:
        cluster_dir = self.run_dir / "stack-cluster"
        shutil.rmtree(cluster_dir, ignore_errors=True)
        cluster_dir.mkdir(parents=True)
        print("starting a Redis Cluster (3 masters + 3 replicas)...", flush=True)
        self.cluster = LocalRedis(cluster_dir, masters=3, replicas=1).start()
        self.env = {
            **os.environ,
            "CHANNELS_FLEET_REDIS_URL": ",".join(self.cluster.urls[:3]),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(self.project),
                                                         os.environ.get("PYTHONPATH")])),
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE",
                                                     "chat_project.settings"),
            "CHAT_RUN_DIR": str(self.run_dir),
            "CHAT_MODERATION": os.environ.get("CHAT_MODERATION", "1"),
            "CHANNELS_FLEET_ALLOWED_ORIGINS": os.environ.get(
                "CHANNELS_FLEET_ALLOWED_ORIGINS", "localhost,127.0.0.1"),
        }
        print("migrating the demo database...", flush=True)
        subprocess.run([sys.executable, str(self.project / "manage.py"), "migrate", "--noinput",
                        "-v", "0"], env=self.env, check=True, cwd=self.project)
        # The demo's accounts (alice, bob: password demo-password).
        subprocess.run([sys.executable, str(self.project / "manage.py"), "demo_users"],
                       env=self.env, check=True, cwd=self.project)
        cli = [sys.executable, "-m", "channels_fleet.cli"]
        metrics = 9101
        for i in range(interfaces):
            self._spawn(f"interface-{i + 1}", [*cli, "interface", "--port", str(8001 + i)],
                        metrics)
            metrics += 1
        for i in range(workers):
            # Every worker also serves the demo's background channel "moderation".
            self._spawn(f"worker-{i + 1}", [*cli, "worker", "chat_project.asgi:application",
                                            "--channels", "moderation"], metrics)
            metrics += 1
        self._spawn("web", [*cli, "web", "chat_project.wsgi:application", "--port",
                            str(web_port)], metrics)
        urls = ", ".join(f"http://localhost:{8001 + i}/" for i in range(interfaces))
        print(
            f"\nchannels-fleet is up (logs in {self.run_dir}/logs/):\n"
            f"  chat through the interfaces (pages relayed to workers): {urls}\n"
            f"  web tier (gunicorn, WSGI):          http://localhost:{web_port}/\n"
            f"  probes and metrics:                 http://localhost:9101/metrics ... "
            f"http://localhost:{metrics}/metrics\n"
            f"  Redis Cluster:                      {self.env['CHANNELS_FLEET_REDIS_URL']}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )

    def _spawn(self, name: str, args: list[str], metrics_port: int) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                args, env={**self.env, "CHANNELS_FLEET_METRICS_PORT": str(metrics_port)},
                stdout=log, stderr=subprocess.STDOUT, cwd=self.project,
                preexec_fn=_die_with_parent,
            )
        self.procs.append((name, proc))

    def failed(self) -> str | None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode} (see {self.run_dir}/logs/{name}.log)"
        return None

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in time: killed", flush=True)
                proc.kill()
                proc.wait()
        if self.cluster is not None:
            self.cluster.stop()
        print("stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m channels_fleet.devstack")
    parser.add_argument("--dir", default=".run", type=Path)
    parser.add_argument("--project", default="examples/chat", type=Path)
    parser.add_argument("--interfaces", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--web-port", type=int, default=8000)
    args = parser.parse_args(argv)
    stack = Stack(args.dir.resolve(), args.project.resolve())
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    status = 0
    try:
        stack.start(args.interfaces, args.workers, args.web_port)
        while not stopping:
            problem = stack.failed()
            if problem:
                print(problem, file=sys.stderr, flush=True)
                status = 1
                break
            time.sleep(0.5)
        print("\nstopping...", flush=True)
    finally:
        stack.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
