"""The built-in Redis Cluster's day 2: Guaranteed pods with room for a resync's fork."""

import re

import pytest

from .helm import component, render

UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "kb": 1000, "mb": 10**6, "gb": 10**9}


def qos_class(pod: dict) -> str:
    """The class Kubernetes gives the pod (its rules: every container, init ones too)."""
    everyone = [*pod.get("initContainers", []), *pod["containers"]]
    guaranteed, any_set = True, False
    for c in everyone:
        limits = c.get("resources", {}).get("limits", {})
        requests = {**limits, **c.get("resources", {}).get("requests", {})}
        any_set = any_set or bool(limits) or bool(requests)
        for resource in ("cpu", "memory"):
            if resource not in limits or str(requests[resource]) != str(limits[resource]):
                guaranteed = False
    return "Guaranteed" if guaranteed else "Burstable" if any_set else "BestEffort"


def size(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", text).groups()
    return int(number) * UNITS[unit]


@pytest.mark.parametrize("sets", [(), ("redis.metrics.enabled=true",)],
                         ids=["defaults", "with the exporter"])
def test_redis_pods_are_guaranteed(sets):
    shards = component(render(sets=sets), "StatefulSet", "redis")
    assert len(shards) == 3
    for sts in shards:
        assert qos_class(sts["spec"]["template"]["spec"]) == "Guaranteed"


def test_qos_rules_as_kubernetes_applies_them():
    both = {"cpu": "1", "memory": "1Mi"}
    assert qos_class({"containers": [{"resources": {"limits": both}}]}) == "Guaranteed"
    assert qos_class({"containers": [{"resources": {"requests": both, "limits": {
        "memory": "1Mi"}}}]}) == "Burstable"
    assert qos_class({"containers": [{"resources": {"limits": both}}],
                      "initContainers": [{}]}) == "Burstable"
    assert qos_class({"containers": [{}]}) == "BestEffort"


def test_memory_limit_leaves_a_fork_and_a_resync_buffer_over_maxmemory():
    (sts, *_) = component(render(), "StatefulSet", "redis")
    (valkey,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "valkey"]
    env = {e["name"]: e.get("value") for e in valkey["env"]}
    maxmemory = size(env["MAXMEMORY"])
    # Copy-on-write during the fork can double the data; the replica's buffer (64mb) on top.
    assert size(valkey["resources"]["limits"]["memory"]) >= 2 * maxmemory + 64 * 2**20

