"""The chart's files/redis/node.sh on real redis-server processes: a shard layout change refused.

Each node runs `node.sh start` as its pod would, with its own loopback address (127.0.26.x, the
same port on each, as pods share one port on their own IPs), its own data and run directories,
and a hosts file standing in for the headless Service's DNS (a `getent` on PATH reads it);
`valkey-server`/`valkey-cli` on PATH are the local redis-server/redis-cli. What must hold:

- 3 masters form a cluster by themselves and record its layout (3 masters x 0 replicas);
- a pod of a 4th shard (redis.cluster.masters 3 -> 4 on an installed release) and a replica
  of shard 0 (replicasPerMaster 0 -> 1) refuse to start: exit 1, one line naming both layouts
  and what to do;
- with the record lost (its shard's data gone), the slot owners still give the masters;
- a pod of the same layout starts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NODE_SH = Path(__file__).resolve().parents[3] / "charts/channels-fleet/files/redis/node.sh"
PREFIX = "fleet-redis-shard-"
DOMAIN = "fleet-redis-headless.chat.svc"
PASSWORD = "layout-test-password"
GETENT = """#!/bin/sh
# getent hosts NAME, from $HOSTS_FILE: the headless Service's DNS for these tests.
[ "$1" = hosts ] && awk -v n="$2" '$2 == n { print; found = 1 } END { exit !found }' "$HOSTS_FILE"
"""


def _free_port_pair() -> int:
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

    def ip(self, shard: int, ordinal: int) -> str:
        return f"127.0.26.{10 + 10 * shard + ordinal}"

    def start(self, shard: int, ordinal: int, masters: int, replicas: int
              ) -> tuple[Path, subprocess.Popen[bytes]]:
        name = f"{PREFIX}{shard}-{ordinal}"
        ip = self.ip(shard, ordinal)
        with self.hosts.open("a") as f:
            f.write(f"{ip} {name}.{DOMAIN}\n")
        home = self.root / name
        for d in ("data", "run"):
            (home / d).mkdir(parents=True, exist_ok=True)
        (home / "extra.conf").write_text(f"bind {ip}\n")
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}",
               "HOSTS_FILE": str(self.hosts), "POD_NAME": name, "POD_IP": ip,
               "LOCAL_ADDR": ip, "SHARD": str(shard), "SHARD_PREFIX": PREFIX,
               "PEER_DOMAIN": DOMAIN, "MASTERS": str(masters),
               "REPLICAS_PER_MASTER": str(replicas), "NODE_TIMEOUT": "2000",
               "REDIS_PASSWORD": PASSWORD, "MAXMEMORY": "64mb", "REDIS_PORT": str(self.port),
               "DATA_DIR": str(home / "data"), "RUN_DIR": str(home / "run"),
               "EXTRA_CONFIG": str(home / "extra.conf"), "KEEPER_INTERVAL": "0.5"}
        with (home / "node.log").open("w") as log:
            proc = subprocess.Popen(["sh", str(NODE_SH), "start"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(proc)
        return home / "node.log", proc

    def cli(self, ip: str, *args: str) -> str:
        done = subprocess.run(["redis-cli", "--no-auth-warning", "-a", PASSWORD, "-h", ip,
                               "-p", str(self.port), "-c", *args],
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def nodes(tmp_path: Path):
    found = Nodes(tmp_path, _free_port_pair())
    yield found
    found.stop()


def wait_for(what: str, check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def refusal(started: tuple[Path, subprocess.Popen[bytes]]) -> str:
    """The one line a refused node logs; it exits 1 before starting a server."""
    log, proc = started
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the node started instead of refusing") from None
    err = log.read_text()
    assert proc.returncode == 1, err
    (line,) = [ln for ln in err.splitlines() if "refusing" in ln]
    return line


def test_a_changed_shard_layout_is_refused(nodes: Nodes) -> None:
    for shard in range(3):
        nodes.start(shard, 0, masters=3, replicas=0)
    first = nodes.ip(0, 0)
    wait_for("the layout recorded", lambda: nodes.cli(first, "GET",
                                                       "channels-fleet:cluster-layout") == "3x0")

    line = refusal(nodes.start(3, 0, masters=4, replicas=0))
    assert line == (
        f"node.sh: refusing to start: the running cluster has the shard layout 3 masters x 0 "
        f"replicas each (asked {PREFIX}0-0.{DOMAIN}), these settings say 4 x 0; the chart "
        f"cannot reshard: set redis.cluster.masters=3 and redis.cluster.replicasPerMaster=0 "
        f"back, or install a new release beside this one and move to it")
    assert "these settings say 3 x 1" in refusal(nodes.start(0, 1, masters=3, replicas=1))
    assert nodes.cli(first, "CLUSTER", "INFO").count("cluster_known_nodes:3") == 1

    # The record lost with its shard's data: the slot owners still count 3 masters.
    assert nodes.cli(first, "DEL", "channels-fleet:cluster-layout").endswith("1")
    assert "layout 3 masters x ? replicas" in refusal(nodes.start(3, 0, masters=4, replicas=0))


def test_the_same_layout_starts(nodes: Nodes) -> None:
    for shard in range(3):
        nodes.start(shard, 0, masters=3, replicas=1)
    first = nodes.ip(0, 0)
    wait_for("the layout recorded", lambda: nodes.cli(first, "GET",
                                                       "channels-fleet:cluster-layout") == "3x1")
    nodes.start(1, 1, masters=3, replicas=1)
    wait_for("the replica joined shard 1",
             lambda: nodes.cli(nodes.ip(1, 1), "ROLE").startswith("slave"))
