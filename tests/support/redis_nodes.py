"""The chart's files/redis/node.sh run as its pods run it, on local redis-server processes.

Each node has its own loopback address (127.0.26.x, the same port on each, as pods share one
port on their own IPs), its own data and run directories, and a hosts file standing in for the
headless Service's DNS (a `getent` on PATH reads it); `valkey-server`/`valkey-cli` on PATH are
the local redis-server/redis-cli.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

NODE_SH = Path(__file__).resolve().parents[2] / "charts/channels-fleet/files/redis/node.sh"
PREFIX = "fleet-redis-shard-"
DOMAIN = "fleet-redis-headless.chat.svc"
PASSWORD = "layout-test-password"
GETENT = """#!/bin/sh
# getent hosts NAME, from $HOSTS_FILE: the headless Service's DNS for these tests.
[ "$1" = hosts ] && awk -v n="$2" '$2 == n { print; found = 1 } END { exit !found }' "$HOSTS_FILE"
"""


def free_port_pair() -> int:
    """A port free with its cluster bus port (+10000) on every 127.0.26.x address."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


class Nodes:
    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.bin = root / "bin"
        self.bin.mkdir()
        for name, real in (("valkey-server", "redis-server"), ("valkey-cli", "redis-cli")):
            path = shutil.which(real)
            if path is None:
                pytest.skip(f"{real} is not on PATH")
            (self.bin / name).symlink_to(path)
        (self.bin / "getent").write_text(GETENT)
        (self.bin / "getent").chmod(0o755)
        self.hosts = root / "hosts"
        self.hosts.write_text("")
        self.procs: list[subprocess.Popen[bytes]] = []
        #: The CA file redis-cli trusts when the nodes run TLS only (their TLS_DIR's ca.crt).
        self.ca: Path | None = None

    def ip(self, shard: int, ordinal: int) -> str:
        return f"127.0.26.{10 + 10 * shard + ordinal}"

    def start(self, shard: int, ordinal: int, masters: int, replicas: int,
              extra_env: dict[str, str] | None = None) -> tuple[Path, subprocess.Popen[bytes]]:
        name = f"{PREFIX}{shard}-{ordinal}"
        ip = self.ip(shard, ordinal)
        with self.hosts.open("a") as f:
            f.write(f"{ip} {name}.{DOMAIN}\n")
        home = self.root / name
        for d in ("data", "run"):
            (home / d).mkdir(parents=True, exist_ok=True)
        # Its own address for what it connects from too, as a pod's only address is: without
        # it, TLS bus links left 127.0.0.1 and a peer could record the node there for good.
        (home / "extra.conf").write_text(f"bind {ip}\nbind-source-addr {ip}\n")
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}",
               "HOSTS_FILE": str(self.hosts), "POD_NAME": name, "POD_IP": ip,
               "LOCAL_ADDR": ip, "SHARD": str(shard), "SHARD_PREFIX": PREFIX,
               "PEER_DOMAIN": DOMAIN, "MASTERS": str(masters),
               "REPLICAS_PER_MASTER": str(replicas), "NODE_TIMEOUT": "2000",
               "REDIS_PASSWORD": PASSWORD, "MAXMEMORY": "64mb", "REDIS_PORT": str(self.port),
               "DATA_DIR": str(home / "data"), "RUN_DIR": str(home / "run"),
               "EXTRA_CONFIG": str(home / "extra.conf"), "KEEPER_INTERVAL": "0.5",
               **(extra_env or {})}
        with (home / "node.log").open("w") as log:
            proc = subprocess.Popen(["sh", str(NODE_SH), "start"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(proc)
        return home / "node.log", proc

    def cli(self, ip: str, *args: str, user: str = "default", password: str = PASSWORD,
            ca: Path | None = None) -> str:
        """One redis-cli command (over TLS with `ca`, or `self.ca` when set), its output."""
        ca = ca or self.ca
        tls = ["--tls", "--cacert", str(ca)] if ca else []
        done = subprocess.run(["redis-cli", "--no-auth-warning", "--user", user, "--pass",
                               password, *tls, "-h", ip, "-p", str(self.port), "-c", *args],
                              capture_output=True, text=True, timeout=10)
        return (done.stdout + done.stderr).strip()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")
