"""The chart's files/redis/node.sh on real redis-server processes (support/redis_nodes.py):
a shard layout change refused. What must hold:

- 3 masters form a cluster by themselves and record its layout (3 masters x 0 replicas);
- a pod of a 4th shard (redis.cluster.masters 3 -> 4 on an installed release) and a replica
  of shard 0 (replicasPerMaster 0 -> 1) refuse to start: exit 1, one line naming both layouts
  and what to do;
- with the record lost (its shard's data gone), the slot owners still give the masters;
- a pod of the same layout starts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.redis_nodes import DOMAIN, PREFIX, Nodes, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


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
    log, _ = nodes.start(1, 1, masters=3, replicas=1)
    wait_for("the replica's pod joined the cluster",
             lambda: "cluster_known_nodes:4" in nodes.cli(nodes.ip(1, 1), "CLUSTER", "INFO"))
    assert "refusing" not in log.read_text()
