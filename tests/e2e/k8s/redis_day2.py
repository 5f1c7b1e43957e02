"""The built-in Redis Cluster's day 2 on the local cluster (test_k8s.py runs these in order):
a changed shard layout refused by `helm upgrade`; the role users (redis.acl.enabled) turned on
by an upgrade: an interface's user is refused a worker-only command, a worker's is not, and the
chat works through them; then a fresh release with TLS only (redis.tls.enabled, its certificate
made in the cluster) and the role users: the same checks, and no plain port."""

from __future__ import annotations

import pytest

from .release import CommandFailed, Release, component, run

LAYOUT_REFUSAL = ("redis.cluster: the installed cluster has 3 masters x 1 replicas each, these "
                  "values say 4 x 1; the chart cannot reshard a running cluster: set "
                  "redis.cluster.masters=3 and redis.cluster.replicasPerMaster=1 back")
# The demo's layer prefix (examples/chat settings): the users' key patterns must name it.
ACL = ("--set", "redis.acl.enabled=true", "--set", "redis.acl.layerPrefix=chat")

# Run in an app pod: LPUSH (the worker's alone: a receive's unused prefetch goes back) on a key
# of the project layer, as the pod's own user (CHANNELS_FLEET_REDIS_URL with its user).
PUSH = """
import os, redis
from redis.cluster import RedisCluster
r = RedisCluster.from_url(os.environ["CHANNELS_FLEET_REDIS_URL"])
print("user", os.environ["CHANNELS_FLEET_REDIS_USERNAME"])
try:
    r.lpush("chat:q:{e2e-acl}", "x")
    print("pushed")
except redis.exceptions.NoPermissionError as exc:
    print("refused", exc)
"""


def refuse_layout_change(release: Release) -> None:
    with pytest.raises(CommandFailed) as refused:
        release.helm("upgrade", release.name, release.chart, "--values", release.values,
                     "--set", "redis.cluster.masters=4", "--dry-run=server")
    assert LAYOUT_REFUSAL in str(refused.value), refused.value


def app_pod(release: Release, kind: str) -> str:
    return next(p["metadata"]["name"] for p in release.app_pods() if component(p) == kind)


def push_as(release: Release, kind: str) -> str:
    return release.exec(app_pod(release, kind), "python3", "-c", PUSH)


# --- a fresh release with TLS only and the role users ----------------------------------------

def install_tls_release(first: Release) -> Release:
    """A second release in a namespace of its own: TLS only, its CA and certificate made once in
    the cluster by the secrets Job (`tls` kind), and the role users."""
    tls = Release(namespace=f"{first.namespace}-tls", name=first.name, chart=first.chart,
                  values=first.values, helm_bin=first.helm_bin, kubectl_bin=first.kubectl_bin)
    run(tls.kubectl_bin, "create", "namespace", tls.namespace)
    tls.kubectl("label", "namespace", tls.namespace,
                "pod-security.kubernetes.io/enforce=restricted")
    # The demo's allowed hosts follow the namespace (config.extraEnv[0] in the e2e values).
    tls.install("--set", "redis.tls.enabled=true", *ACL,
                "--set", f"config.extraEnv[0].value=.{tls.namespace}.svc.cluster.local\\,localhost")
    return tls


def plain_port_refused(release: Release) -> str:
    """What a client without TLS gets from a node: its plain port is closed (port 0)."""
    pod = f"{release.fullname}-redis-shard-0-0"
    return release.exec(pod, "sh", "-c", 'valkey-cli -a "$REDIS_PASSWORD" --no-auth-warning PING '
                        "2>&1 || true")


def remove(release: Release) -> None:
    release.helm("uninstall", release.name, "--wait", "--timeout", "5m")
    run(release.kubectl_bin, "delete", "namespace", release.namespace, "--wait=true")
