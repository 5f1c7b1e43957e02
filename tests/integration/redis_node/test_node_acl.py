"""The chart's role users (redis.acl.enabled) on a node run by files/redis/node.sh, on a local
redis-server (support/redis_nodes.py), with the ACL file the chart renders: each role can do
its own work and no other's, the default user keeps the node's own traffic, and a password a
URL would have to escape stops the node with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.redis_nodes import Nodes, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROLES = ("interface", "worker", "web", "exporter")


@pytest.fixture(scope="module")
def users_acl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chart_helm = pytest.importorskip("chart.helm")
    if chart_helm.helm_binary() is None:
        pytest.skip("helm not found: run `make helm`")
    docs = chart_helm.render(sets=("redis.acl.enabled=true", "redis.acl.layerPrefix=chat"))
    acl = chart_helm.one(docs, "ConfigMap", "fleet-channels-fleet-redis")["data"]["users.acl"]
    path = tmp_path_factory.mktemp("acl") / "users.acl"
    path.write_text(acl)
    return path


def passwords(**changed: str) -> dict[str, str]:
    return {f"ACL_{role.upper()}_PASSWORD": changed.get(role, f"{role}-pw-0123")
            for role in ROLES}


def test_each_role_does_its_own_work_only(nodes: Nodes, users_acl: Path) -> None:
    nodes.start(0, 0, masters=1, replicas=0,
                extra_env={"ACL_FILE": str(users_acl), **passwords()})
    ip = nodes.ip(0, 0)
    wait_for("every slot served", lambda: "cluster_state:ok" in nodes.cli(ip, "CLUSTER", "INFO"))

    def as_role(role: str, *args: str) -> str:
        return nodes.cli(ip, *args, user=f"fleet-{role}", password=f"{role}-pw-0123")

    # A worker-only command and a worker-only key: refused to the interface, done by a worker.
    assert "NOPERM" in as_role("interface", "LPUSH", "chat:q:{room}", "m")
    assert "NOPERM" in as_role("interface", "ZADD", "fleet:workers:{hb}", "1", "w")
    assert as_role("worker", "LPUSH", "chat:q:{room}", "m") == "1"
    assert as_role("worker", "ZADD", "fleet:workers:{hb}", "1", "w") == "1"
    assert as_role("interface", "ZRANGEBYSCORE", "fleet:workers:{hb}", "0", "2") == "w"
    assert as_role("web", "RPUSH", "chat:q:{room}", "m") == "2"
    # The session registry: the worker writes an entry, an interface only reads it.
    session = "fleet:session:{" + "0" * 32 + "}"
    assert as_role("worker", "SET", session, "{}", "PX", "60000") == "OK"
    assert as_role("interface", "MGET", session) == "{}"
    assert "NOPERM" in as_role("interface", "SET", session, "{}")
    assert "NOPERM" in as_role("web", "MGET", session)
    assert "NOPERM" in as_role("web", "SET", "fleet:hb:{hb}:x", "1")
    assert "NOPERM" in as_role("exporter", "SET", "fleet:hb:{hb}:x", "1")
    assert "NOPERM" in as_role("worker", "CONFIG", "GET", "maxmemory")
    assert "WRONGPASS" in nodes.cli(ip, "PING", user="fleet-worker", password="interface-pw-0123")
    # The default user is the node's own (probes, node.sh, replication).
    assert nodes.cli(ip, "ACL", "WHOAMI") == "default"
    assert nodes.cli(ip, "PING", user="default", password="") != "PONG"


def test_a_password_a_url_must_escape_stops_the_node(nodes: Nodes, users_acl: Path) -> None:
    log, proc = nodes.start(0, 0, masters=1, replicas=0,
                            extra_env={"ACL_FILE": str(users_acl), **passwords(web="a@b")})
    assert proc.wait(timeout=20) == 1
    assert log.read_text().strip() == (
        "node.sh: the password of the web user (ACL_WEB_PASSWORD) is empty or has characters "
        "a redis:// URL must escape; use letters, digits and -._~")
