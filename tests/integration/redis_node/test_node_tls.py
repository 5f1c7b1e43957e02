"""The built-in cluster with redis.tls.enabled and redis.acl.enabled, on local redis-server
processes run by files/redis/node.sh (support/redis_nodes.py), with the certificate the `tls`
kind makes (channels_fleet.kube.tls): the nodes form a cluster over TLS (bus and clients), no
plain port answers, a client trusting another CA is refused, a role user works over TLS."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.redis_nodes import DOMAIN, Nodes, wait_for

from channels_fleet.kube.tls import make_tls

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class Item:
    secret = "fleet-channels-fleet-redis-tls"
    options = {"dnsNames": [f"*.{DOMAIN}"]}


def write_tls(where: Path) -> Path:
    where.mkdir()
    for key, value in make_tls(Item(), {}).items():
        (where / key).write_bytes(value)
    return where


def test_a_tls_only_cluster(nodes: Nodes, tmp_path: Path) -> None:
    tls = write_tls(tmp_path / "tls")
    acl = tmp_path / "users.acl"
    acl.write_text("user fleet-web reset on >web-password ~chat:* resetchannels -@all +hello "
                   "+rpush +llen +cluster|slots\n")
    env = {"TLS_DIR": str(tls), "ACL_FILE": str(acl),
           **{f"ACL_{r}_PASSWORD": f"{r.lower()}-pw" for r in
              ("INTERFACE", "WORKER", "WEB", "EXPORTER")}}
    for shard in range(3):
        nodes.start(shard, 0, masters=3, replicas=0, extra_env=env)
    nodes.ca = tls / "ca.crt"
    first = nodes.ip(0, 0)
    def formed() -> bool:
        return all(f in nodes.cli(nodes.ip(shard, 0), "CLUSTER", "INFO") for shard in range(3)
                   for f in ("cluster_state:ok", "cluster_slots_assigned:16384",
                             "cluster_known_nodes:3"))

    # Each keeper step is a few TLS handshakes: slow on a busy machine.
    wait_for("every node in the cluster formed over TLS", formed, timeout=150)
    # Clients are sent to the nodes' names, which the certificate covers.
    assert f"fleet-redis-shard-0-0.{DOMAIN}" in nodes.cli(first, "CLUSTER", "SLOTS")

    # Straight to the key's master (its name resolves in Kubernetes, not here).
    slot = int(nodes.cli(first, "CLUSTER", "KEYSLOT", "chat:q:{r}"))
    owner = nodes.ip(next(s for s in range(3) if slot < (s + 1) * 16384 // 3), 0)
    assert nodes.cli(owner, "RPUSH", "chat:q:{r}", "m", user="fleet-web",
                     password="web-pw") == "1"
    assert "NOPERM" in nodes.cli(owner, "LPUSH", "chat:q:{r}", "m", user="fleet-web",
                                 password="web-pw")
    # Without TLS nothing answers; with another CA the handshake fails.
    nodes.ca = None
    assert "PONG" not in nodes.cli(first, "PING")
    other = write_tls(tmp_path / "other")
    assert "certificate verify failed" in nodes.cli(first, "PING", ca=other / "ca.crt")
