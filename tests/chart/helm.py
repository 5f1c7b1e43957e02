"""Run helm on the chart and parse what it renders.

Helm is taken from $HELM, then PATH, then .tools/bin/helm (where `make helm` installs it).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE_CHART = ROOT / "charts" / "channels-fleet"
CI_VALUES = sorted((SOURCE_CHART / "ci").glob("*-values.yaml"))


CHART = SOURCE_CHART
RELEASE = "fleet"
NAMESPACE = "chat"
# APIs of the optional CRDs, as a cluster with them installed would report.
CRD_APIS = [
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "keda.sh/v1alpha1/ScaledObject",
    "keda.sh/v1alpha1/TriggerAuthentication",
    "gateway.networking.k8s.io/v1/HTTPRoute",
]


def helm_binary() -> str | None:
    for candidate in (os.environ.get("HELM"), shutil.which("helm"), str(ROOT / ".tools/bin/helm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def docs(self) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.stdout) if d]


def helm(*args: str, timeout: float = 60) -> Result:
    binary = helm_binary()
    if binary is None:
        raise RuntimeError("helm not found: run `make helm` (installs it into .tools/bin)")
    proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HELM_CACHE_HOME": str(ROOT / ".tools/helm-cache"),
                               "HELM_CONFIG_HOME": str(ROOT / ".tools/helm-config")})
    return Result(proc.returncode, proc.stdout, proc.stderr)


@functools.lru_cache(maxsize=64)
def template(*values_files: Path | str, sets: tuple[str, ...] = (), crds: bool = False,
             kube_version: str | None = None) -> Result:
    """`helm template` the chart; `crds` adds the optional CRD APIs to the capabilities."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for f in values_files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    if crds:
        args += ["--api-versions", ",".join(CRD_APIS)]
    if kube_version:
        args += ["--kube-version", kube_version]
    return helm(*args)


def render(*values_files: Path | str, sets: tuple[str, ...] = (), crds: bool = False
           ) -> list[dict[str, Any]]:
    result = template(*values_files, sets=sets, crds=crds)
    assert result.returncode == 0, result.stderr
    return result.docs()


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def component(docs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    """The objects of one kind labelled app.kubernetes.io/component=name."""
    return [d for d in find(docs, kind)
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name]
