#!/usr/bin/env python3
"""Generate the chart's values.schema.json and README values table from values.yaml.

Every value in `charts/channels-fleet/values.yaml` carries a `## @param key description` line (as
bitnami's readme-generator expects). This script turns them into:

- `values.schema.json`: each value typed from its default, with its description and default, plus
  the constraints in CONSTRAINTS below (integers >= 0, enums, patterns). Objects without an
  `@param` of their own refuse unknown keys (`additionalProperties: false`), the top level too;
  an object that has its own `@param` (labels, resources, a strategy) is free-form.
- the README's "Parameters" section, between the `<!-- values-table -->` markers.

    python3 scripts/chart-schema.py           # rewrite both files
    python3 scripts/chart-schema.py --check   # exit 1 when either is out of date (tests run this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "charts" / "channels-fleet"
PARAM = re.compile(r"^\s*## @param (\S+) (.+)$")
SECTION = re.compile(r"^\s*## @section (.+)$")
BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"

COUNT = {"type": "integer", "minimum": 0}
POSITIVE = {"type": "integer", "minimum": 1}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
PULL = {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}
SVC_TYPE = {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]}
DIGEST = {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"}
DURATION = {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"}
UNAVAILABLE = {
    "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^[0-9]{1,3}%$"}]
}
REGISTRY = {"type": "string", "minLength": 1,
            "pattern": r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?$"}
TAG = {"type": "string", "minLength": 1, "pattern": r"^[\w][\w.-]{0,127}$"}
QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"}
ACCESS_MODES = {"type": "array", "minItems": 1, "items": {"type": "string", "enum": [
    "ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]}}
COMMAND = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}
STRATEGY = {"type": "object", "properties": {"type": {"enum": ["RollingUpdate", "Recreate"]}}}
PG_NAME = {"type": "string", "pattern": r"^[a-z_][a-z0-9_]{0,62}$"}
# A NetworkPolicy port range (`endPort` needs a numeric port).
PORT_RANGE = {"type": "object", "required": ["port", "endPort"], "additionalProperties": False,
              "properties": {"port": PORT, "endPort": PORT}}
# A key of a Secret or ConfigMap (Kubernetes: [-._a-zA-Z0-9]+); empty where a key may be unused.
KEY = {"type": "string", "pattern": r"^[-._a-zA-Z0-9]+$"}
KEY_OR_NONE = {"type": "string", "pattern": r"^$|^[-._a-zA-Z0-9]+$"}
OBJECT_NAME_OR_NONE = {"type": "string", "pattern": r"^$|^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"}
# Pod volumes and container mounts, as Kubernetes takes them (its schema checks the rest).
VOLUMES = {"type": "array", "items": {"type": "object", "required": ["name"]}}
VOLUME_MOUNTS = {"type": "array", "items": {"type": "object", "required": ["name", "mountPath"]}}
# Extra constraints by key; "*" matches one path segment.
CONSTRAINTS: dict[str, dict[str, Any]] = {
    "*Image.registry": REGISTRY,
    "*.image.registry": REGISTRY,
    "*.*.image.registry": REGISTRY,
    "*Image.pullPolicy": PULL,
    "*.image.pullPolicy": PULL,
    "*.*.image.pullPolicy": PULL,
    "*Image.digest": DIGEST,
    "*.image.digest": DIGEST,
    "*.*.image.digest": DIGEST,
    "*.image.tag": TAG,
    "*.*.image.tag": TAG,
    "*.replicaCount": COUNT,
    "*.minReadySeconds": COUNT,
    "*.strategy": STRATEGY,
    "worker.autoscaling.minReplicas": POSITIVE,
    "*.autoscaling.minReplicas": COUNT,
    "*.autoscaling.maxReplicas": POSITIVE,
    "*.autoscaling.targetCPUUtilizationPercentage": COUNT,
    "interface.autoscaling.targetConnectionsPerPod": COUNT,
    "worker.autoscaling.mode": {"type": "string", "enum": ["hpa", "keda"]},
    "redis.cluster.antiAffinity": {"type": "string", "enum": ["hard", "soft"]},
    # A share of the workers' room (1 = full), and seconds: both above 0.
    "worker.autoscaling.targetSaturation": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "worker.autoscaling.burstQueueAge": {"type": "number", "exclusiveMinimum": 0},
    "worker.autoscaling.hpa.*": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]*$"},
    "worker.autoscaling.keda.serverAddress": {"type": "string", "pattern": r"^$|^https?://"},
    "worker.concurrency": COUNT,
    "web.workers": POSITIVE,
    "*.pdb.maxUnavailable": UNAVAILABLE,
    "*.service.type": SVC_TYPE,
    "*.service.port": PORT,
    "*.service.nodePort": {"type": "integer", "minimum": 0, "maximum": 32767},
    "ports.http": PORT,
    "ports.metrics": PORT,
    "config.drainTimeout": POSITIVE,
    "config.preStopSleep": COUNT,
    "config.terminationMargin": COUNT,
    "config.keyPrefix": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"},
    "probes.*.periodSeconds": POSITIVE,
    "probes.*.timeoutSeconds": POSITIVE,
    "probes.*.failureThreshold": POSITIVE,
    "redis.external.url": {"type": "string", "pattern": r"^$|^rediss?://"},
    "redis.cluster.masters": {"type": "integer", "minimum": 1, "maximum": 100},
    "redis.cluster.replicasPerMaster": {"type": "integer", "minimum": 0, "maximum": 5},
    "redis.cluster.nodeTimeout": {"type": "integer", "minimum": 1000},
    "redis.maxmemory": {"type": "string", "pattern": r"^[0-9]+([kKmMgG][bB])?$"},
    # Literal in an ACL key pattern: none of * ? [ ] \ (nor a space).
    "redis.acl.layerPrefix": {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,64}$"},
    "*.persistence.size": QUANTITY,
    "*.*.persistence.size": QUANTITY,
    "*.persistence.accessModes": ACCESS_MODES,
    "*.*.persistence.accessModes": ACCESS_MODES,
    "database.external.url": {"type": "string", "pattern": r"^$|^[a-z][a-z0-9+.-]*://"},
    "database.postgresql.username": PG_NAME,
    "database.postgresql.database": PG_NAME,
    "database.migrate.command": COMMAND,
    "database.migrate.checkCommand": COMMAND,
    "database.migrate.backoffLimit": COUNT,
    "database.migrate.activeDeadlineSeconds": POSITIVE,
    "project.asgiApp": {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"},
    "project.wsgiApp": {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"},
    "routes.interfacePaths": {"type": "array", "minItems": 1,
                              "items": {"type": "string", "pattern": "^/"}},
    "ingress.hosts": {"type": "array", "items": {"type": "string"}},
    "httpRoute.hostnames": {"type": "array", "items": {"type": "string"}},
    "httpRoute.parentRefs": {"type": "array", "items": {"type": "object", "required": ["name"]}},
    "networkPolicy.redisEgress.ports": {"type": "array", "items": {"oneOf": [PORT, PORT_RANGE]}},
    "redis.external.auth.*Key": KEY_OR_NONE,
    "redis.external.auth.roles.*.*": KEY_OR_NONE,
    "redis.external.tls.*.name": OBJECT_NAME_OR_NONE,
    "redis.external.tls.*.key": KEY,
    "resume.existingSecret": OBJECT_NAME_OR_NONE,
    "resume.existingSecretKey": KEY,
    "*.extraVolumes": VOLUMES,
    "*.*.extraVolumes": VOLUMES,
    "*.extraVolumeMounts": VOLUME_MOUNTS,
    "*.*.extraVolumeMounts": VOLUME_MOUNTS,
    "metrics.serviceMonitor.interval": DURATION,
    "metrics.serviceMonitor.scrapeTimeout": DURATION,
    "tests.websocket.path": {"type": "string", "pattern": "^/"},
}


def params(text: str) -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """The `@param` descriptions by key, and the keys in file order grouped by `@section`."""
    desc: dict[str, str] = {}
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if m := SECTION.match(line):
            sections.append((m.group(1).strip(), []))
        elif m := PARAM.match(line):
            desc[m.group(1)] = m.group(2).strip()
            sections[-1][1].append(m.group(1))
    return desc, sections


def constraint(path: str) -> dict[str, Any]:
    for pattern, rule in CONSTRAINTS.items():
        regex = "^" + re.escape(pattern).replace(r"\*", r"[^.]+") + "$"
        if re.match(regex, path):
            return rule
    return {}


def type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise SystemExit(f"values.yaml: cannot type {value!r}")


def schema_for(path: str, value: Any, desc: dict[str, str]) -> dict[str, Any]:
    """The schema of one value; recurses into objects that have no `@param` of their own."""
    if isinstance(value, dict) and path not in desc:
        props = {k: schema_for(f"{path}.{k}" if path else k, v, desc) for k, v in value.items()}
        node: dict[str, Any] = {"type": "object", "additionalProperties": False,
                                "properties": props}
        if path:
            node["description"] = f"{path} settings"
        return node
    if path not in desc:
        raise SystemExit(f"values.yaml: {path} has no '## @param {path} ...' line")
    node = {"type": type_of(value)}
    node.update(constraint(path))
    if "oneOf" in node:
        node.pop("type")
    node["description"] = desc[path]
    node["default"] = value
    return node


def build_schema(values: dict[str, Any], desc: dict[str, str]) -> dict[str, Any]:
    schema = schema_for("", values, desc)
    missing = [k for k in desc if not _has(values, k)]
    if missing:
        raise SystemExit(f"values.yaml: @param for missing values: {', '.join(missing)}")
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "channels-fleet chart values",
        **schema,
    }


def _has(values: dict[str, Any], path: str) -> bool:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _get(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def build_table(values: dict[str, Any], desc: dict[str, str],
                sections: list[tuple[str, list[str]]]) -> str:
    out = [BEGIN]
    for title, keys in sections:
        out += ["", f"### {title}", "", "| Name | Description | Default |", "|---|---|---|"]
        for key in keys:
            default = json.dumps(_get(values, key))
            if len(default) > 60:
                default = "(see values.yaml)"
            text = desc[key].replace("|", "\\|")
            out.append(f"| `{key}` | {text} | `{default}` |")
    out += ["", END]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the files are current")
    args = ap.parse_args()
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    desc, sections = params(text)
    schema = json.dumps(build_schema(values, desc), indent=2) + "\n"
    readme_path = CHART / "README.md"
    readme = readme_path.read_text() if readme_path.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{readme_path}: missing {BEGIN} / {END} markers")
    head, rest = readme.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new_readme = head + build_table(values, desc, sections) + tail
    outputs = {CHART / "values.schema.json": schema, readme_path: new_readme}
    stale = [p for p, body in outputs.items() if not p.exists() or p.read_text() != body]
    if args.check:
        for p in stale:
            print(f"{p} is out of date: run python3 scripts/chart-schema.py", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(outputs[p])
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
