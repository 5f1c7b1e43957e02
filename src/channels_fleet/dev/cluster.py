"""Start and stop real local Redis servers: a Redis Cluster or a single node.

Used by the test fixtures, ``make cluster-up`` / ``make cluster-down`` and ``make run``.
Every server is a plain ``redis-server`` child process on a free loopback port (never
6379), keeping nothing on disk outside its own directory. Children are started with
``PR_SET_PDEATHSIG`` so that they die with the process that started them, even when that
process is killed; ``up`` (the CLI) detaches them instead and records their pids so that
``down`` can stop them later.

    python -m channels_fleet.dev.cluster up --dir .run/cluster     # prints the URLs
    python -m channels_fleet.dev.cluster down --dir .run/cluster
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from channels_fleet.process import die_with_parent

from .ports import free_ports


class DevClusterError(RuntimeError):
    """A local Redis server could not be started or the cluster did not form."""


def redis_server_binary() -> str:
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    raise DevClusterError(
        "no redis-server or valkey-server on PATH; run `make install-redis` "
        "(Debian: apt-get install redis-server)"
    )


@dataclass
class RedisNode:
    port: int
    workdir: Path
    cluster: bool = False
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    #: More ``redis-server`` options, after the defaults (so they win): ``{"maxmemory": "1gb"}``.
    config: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, *, detach: bool = False) -> None:
        # redis-server changes into --dir before opening --logfile: relative paths would
        # then point inside themselves.
        self.workdir = self.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
            "--protected-mode", "no",
        ]
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.workdir / "nodes.conf"),
                # Short enough that a failover test finishes quickly, long enough
                # not to flap on a loaded 2-core machine.
                "--cluster-node-timeout", "2000",
                # A replica may take over however recently it synced: a test that kills a
                # master seconds after the cluster formed still gets a failover.
                "--cluster-replica-validity-factor", "0",
            ]
        for name, value in self.config.items():
            args += [f"--{name}", value]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=None if detach else die_with_parent,
            start_new_session=detach,
        )
        self.pid = self.process.pid

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                log = self.workdir / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise DevClusterError(f"redis-server on port {self.port} exited:\n{tail}")
            if _ping(self.port):
                return
            time.sleep(0.05)
        raise DevClusterError(f"redis-server on port {self.port} did not answer PING in {timeout}s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.pid is None:
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass
        if self.process is not None and sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _command(port: int, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30
    )
    return result.stdout


@dataclass
class LocalRedis:
    """A set of local redis-server processes: one single node, or a cluster."""

    workdir: Path
    masters: int = 1
    replicas: int = 0
    nodes: list[RedisNode] = field(default_factory=list)
    #: ``redis-server`` options for every node, on top of the defaults:
    #: ``{"cluster-require-full-coverage": "no"}`` keeps the other shards serving with one out.
    config: dict[str, str] = field(default_factory=dict)

    @property
    def is_cluster(self) -> bool:
        return self.masters > 1 or self.replicas > 0

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node_count(self) -> int:
        """How many redis-server processes ``start`` runs (a subclass with another layout
        says its own, and creates the cluster its way in ``_create_cluster``)."""
        return self.masters * (1 + self.replicas)

    def start(self, *, detach: bool = False) -> LocalRedis:
        ports = free_ports(self.node_count(), with_bus=self.is_cluster)
        self.nodes = [
            RedisNode(port, self.workdir / str(port), cluster=self.is_cluster,
                      config=self.config)
            for port in ports
        ]
        try:
            for node in self.nodes:
                node.start(detach=detach)
            for node in self.nodes:
                node.wait_ready()
            if self.is_cluster:
                self._create_cluster()
        except BaseException:
            self.stop()
            raise
        return self

    def _create_cluster(self) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        result = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses,
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        if result.returncode != 0:
            raise DevClusterError(
                f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}")
        self.wait_cluster_ok()

    def wait_cluster_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node reports cluster_state:ok and every replica is in sync.

        A replica whose link to its master is not up yet cannot be promoted, so a failover
        test started before that point would wait forever for the new master.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [node for node in self.nodes if node.alive()]
            states = [_command(node.port, "cluster", "info") for node in live]
            if all("cluster_state:ok" in state for state in states):
                roles = [_command(node.port, "role").split("\n", 1)[0] for node in live]
                replicas = [node for node, role in zip(live, roles, strict=True) if role == "slave"]
                synced = all(
                    "master_link_status:up" in _command(node.port, "info", "replication")
                    for node in replicas
                )
                if roles.count("master") == self.masters and synced:
                    return
            time.sleep(0.1)
        raise DevClusterError(f"cluster did not reach cluster_state:ok within {timeout}s")

    def masters_now(self) -> list[RedisNode]:
        """The nodes that are masters at this moment (changes after a failover)."""
        return [
            node for node in self.nodes
            if node.alive() and _command(node.port, "role").startswith("master")
        ]

    def stop(self) -> None:
        for node in self.nodes:
            node.kill(signal.SIGKILL)

    def save_state(self, path: Path) -> None:
        path.write_text(json.dumps({
            "masters": self.masters, "replicas": self.replicas,
            "nodes": [{"port": n.port, "pid": n.pid, "workdir": str(n.workdir)}
                      for n in self.nodes],
        }))

    @classmethod
    def load_state(cls, path: Path) -> LocalRedis:
        data = json.loads(path.read_text())
        local = cls(path.parent, data["masters"], data["replicas"])
        local.nodes = [
            RedisNode(n["port"], Path(n["workdir"]), cluster=local.is_cluster, pid=n["pid"])
            for n in data["nodes"]
        ]
        return local


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m channels_fleet.dev.cluster")
    parser.add_argument("action", choices=["up", "down", "urls"])
    parser.add_argument("--dir", default=".run/cluster", type=Path)
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args(argv)
    state_file = args.dir / "state.json"

    if args.action == "up":
        if state_file.exists():
            existing = LocalRedis.load_state(state_file)
            if all(node.alive() for node in existing.nodes):
                print(",".join(existing.urls))
                return 0
            existing.stop()
        shutil.rmtree(args.dir, ignore_errors=True)
        args.dir.mkdir(parents=True)
        local = LocalRedis(args.dir, args.masters, args.replicas).start(detach=True)
        local.save_state(state_file)
        print(",".join(local.urls))
        return 0
    if not state_file.exists():
        print(f"no cluster recorded in {state_file}", file=sys.stderr)
        return 0 if args.action == "down" else 1
    local = LocalRedis.load_state(state_file)
    if args.action == "urls":
        print(",".join(local.urls))
        return 0
    local.stop()
    shutil.rmtree(args.dir, ignore_errors=True)
    print(f"stopped {len(local.nodes)} redis-server processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
