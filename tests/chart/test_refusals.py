"""Bad values are refused before anything reaches a cluster, with a message naming the value."""

import pytest

from .helm import template

# (values YAML, text the error must contain)
SCHEMA_REFUSALS = {
    "negative replicas": ("interface:\n  replicaCount: -1\n",
                          "at '/interface/replicaCount': minimum: got -1, want 0"),
    "fractional replicas": ("worker:\n  replicaCount: 1.5\n",
                            "at '/worker/replicaCount': got number, want integer"),
    "replicas as a string": ("web:\n  replicaCount: \"3\"\n",
                             "at '/web/replicaCount': got string, want integer"),
    "unknown top-level key": ("replicas: 3\n", "additional properties 'replicas' not allowed"),
    "typo in a nested key": ("interface:\n  replicas: 3\n",
                             "at '/interface': additional properties 'replicas' not allowed"),
    "bad pull policy": ("interfaceImage:\n  pullPolicy: Sometimes\n",
                        "at '/interfaceImage/pullPolicy': value must be one of 'Always', "
                        "'IfNotPresent', 'Never'"),
    "saturation target above full": (
        "worker:\n  autoscaling:\n    targetSaturation: 70\n",
        "at '/worker/autoscaling/targetSaturation': maximum: got 70, want 1"),
    "no burst age": ("worker:\n  autoscaling:\n    burstQueueAge: 0\n",
                     "at '/worker/autoscaling/burstQueueAge': exclusiveMinimum"),
    "bad autoscaling mode": ("worker:\n  autoscaling:\n    mode: cron\n",
                             "at '/worker/autoscaling/mode': value must be one of 'hpa', 'keda'"),
    "bool as string": ("ingress:\n  enabled: \"yes\"\n",
                       "at '/ingress/enabled': got string, want boolean"),
    "port out of range": ("ports:\n  metrics: 70000\n",
                          "at '/ports/metrics': maximum: got 70,000, want 65,535"),
    "zero drain timeout": ("config:\n  drainTimeout: 0\n",
                           "at '/config/drainTimeout': minimum: got 0, want 1"),
    "redis URL scheme": ("redis:\n  external:\n    url: http://redis:6379\n",
                         "at '/redis/external/url'"),
    "route path without slash": ("routes:\n  interfacePaths: [ws]\n",
                                 "at '/routes/interfacePaths/0'"),
    "image without a registry host": ("projectImage:\n  registry: \"\"\n",
                                      "at '/projectImage/registry'"),
    "registry with a path": ("redis:\n  image:\n    registry: docker.io/valkey\n",
                             "at '/redis/image/registry'"),
    "no Redis masters": ("redis:\n  cluster:\n    masters: 0\n",
                         "at '/redis/cluster/masters': minimum: got 0, want 1"),
    "bad maxmemory": ("redis:\n  maxmemory: lots\n", "at '/redis/maxmemory'"),
    "bad claim size": ("database:\n  postgresql:\n    persistence:\n      size: big\n",
                       "at '/database/postgresql/persistence/size'"),
    "database user with a quote": ("database:\n  postgresql:\n    username: \"a'b\"\n",
                                   "at '/database/postgresql/username'"),
    "empty migrate command": ("database:\n  migrate:\n    command: []\n",
                              "at '/database/migrate/command'"),
    "one worker minimum for autoscaling": (
        "worker:\n  autoscaling:\n    minReplicas: 0\n",
        "at '/worker/autoscaling/minReplicas': minimum: got 0, want 1"),
    "bad strategy type": ("interface:\n  strategy:\n    type: BlueGreen\n",
                          "at '/interface/strategy/type'"),
    "bad digest": ("projectImage:\n  digest: latest\n", "at '/projectImage/digest'"),
    "bad maxUnavailable": ("worker:\n  pdb:\n    maxUnavailable: half\n",
                           "at '/worker/pdb/maxUnavailable'"),
    "bad ASGI app": ("project:\n  asgiApp: chat_project.asgi\n", "at '/project/asgiApp'"),
    "key prefix with a hash tag": ("config:\n  keyPrefix: \"a{b}\"\n", "at '/config/keyPrefix'"),
}

# validateValues: cross-value rules the schema cannot express.
VALIDATE_REFUSALS = {
    "one master with replicas": (
        "redis:\n  cluster:\n    masters: 1\n    replicasPerMaster: 1\n",
        "set redis.cluster.masters >= 3, or redis.cluster.replicasPerMaster=0 for a small "
        "install (got 1 masters)"),
    "two masters with replicas": (
        "redis:\n  cluster:\n    masters: 2\n",
        "which needs 3 masters or more"),
    "HTTPRoute without a Gateway": ("httpRoute:\n  enabled: true\n",
                                    "httpRoute: set httpRoute.parentRefs"),
    "KEDA without a Prometheus": (
        "worker:\n  autoscaling:\n    enabled: true\n    mode: keda\n    keda:\n"
        "      serverAddress: \"\"\n",
        "set worker.autoscaling.keda.serverAddress"),
    "min above max": ("interface:\n  autoscaling:\n    enabled: true\n    minReplicas: 5\n"
                      "    maxReplicas: 3\n",
                      "set interface.autoscaling.minReplicas (5) <= "
                      "interface.autoscaling.maxReplicas (3)"),
    "interface HPA without a metric": (
        "interface:\n  autoscaling:\n    enabled: true\n    targetCPUUtilizationPercentage: 0\n"
        "    targetConnectionsPerPod: 0\n",
        "set interface.autoscaling.targetCPUUtilizationPercentage or "
        "interface.autoscaling.targetConnectionsPerPod above 0"),
    "nothing enabled": ("interface:\n  enabled: false\nworker:\n  enabled: false\n"
                        "web:\n  enabled: false\n", "enable at least one of interface.enabled"),
    "closed network policy without peers": (
        "networkPolicy:\n  enabled: true\n  allowExternal: false\n",
        "set networkPolicy.ingressFrom"),
}


def _refused(tmp_path, body: str) -> str:
    values = tmp_path / "bad-values.yaml"
    values.write_text(body)
    result = template(values)
    assert result.returncode != 0, f"accepted:\n{body}"
    assert "Error:" in result.stderr
    return result.stderr


def _show(case: str, err: str, expected: str) -> None:
    """Print the refusal's own line (the report quotes these)."""
    lines = [line.strip() for line in err.splitlines() if expected[:25] in line]
    print(f"refused {case}: {lines[0] if lines else err.strip()}")


@pytest.mark.parametrize("case", SCHEMA_REFUSALS, ids=str)
def test_schema_refuses(case, tmp_path):
    body, expected = SCHEMA_REFUSALS[case]
    err = _refused(tmp_path, body)
    _show(case, err, expected)
    assert "values don't meet the specifications of the schema" in err
    assert expected in err


@pytest.mark.parametrize("case", VALIDATE_REFUSALS, ids=str)
def test_validate_values_refuses(case, tmp_path):
    body, expected = VALIDATE_REFUSALS[case]
    err = _refused(tmp_path, body)
    _show(case, err, expected)
    assert "VALUES VALIDATION" in err
    assert expected in err


def test_set_string_replicas_refused():
    result = template(sets=("interface.replicaCount=-2",))
    assert result.returncode != 0
    assert "minimum: got -2, want 0" in result.stderr


def test_good_values_accepted(tmp_path):
    """The refusals are not a schema that refuses everything: close variants are accepted."""
    values = tmp_path / "ok.yaml"
    values.write_text("interface:\n  replicaCount: 0\nworker:\n  replicaCount: 3\n"
                      "  pdb:\n    maxUnavailable: 50%\nredis:\n  external:\n"
                      "    url: rediss://r:6380\n  maxmemory: 1gb\n"
                      "projectImage:\n  registry: registry.local:5000\n")
    result = template(values)
    assert result.returncode == 0, result.stderr
