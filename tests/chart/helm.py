"""Run helm on the chart and parse what it renders.

Helm is taken from $HELM, then PATH, then .tools/bin/helm (where `make helm` installs it).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE_CHART = ROOT / "charts" / "channels-fleet"
CI_VALUES = sorted((SOURCE_CHART / "ci").glob("*-values.yaml"))


def subchart_built() -> bool:
    """Whether `helm dependency build` has put the bitnami redis-cluster chart in charts/."""
    return any((SOURCE_CHART / "charts").glob("redis-cluster-*.tgz"))


def _chart_under_test() -> Path:
    """The chart, or, while its optional dependency is not built, a copy without that entry.

    Helm refuses to lint (--strict) or render a chart whose declared dependency is missing from
    charts/, whatever its condition. The redis-cluster chart is fetched from bitnami's registry
    by `helm dependency build`, which is not reachable everywhere, so the checks of our own
    templates run on a copy whose Chart.yaml drops that entry; the bundled-cluster checks are
    skipped with a note until the dependency is built.
    """
    if subchart_built():
        return SOURCE_CHART
    copy = Path(tempfile.mkdtemp(prefix="channels-fleet-chart-")) / "channels-fleet"
    shutil.copytree(SOURCE_CHART, copy, ignore=shutil.ignore_patterns("charts"))
    meta = yaml.safe_load((copy / "Chart.yaml").read_text())
    assert [d["name"] for d in meta.pop("dependencies")] == ["redis-cluster"]
    (copy / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    atexit.register(shutil.rmtree, copy.parent, True)
    return copy


CHART = _chart_under_test()
RELEASE = "fleet"
NAMESPACE = "chat"
# APIs of the optional CRDs, as a cluster with them installed would report.
CRD_APIS = [
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "keda.sh/v1alpha1/ScaledObject",
    "keda.sh/v1alpha1/TriggerAuthentication",
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


def ours(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only this chart's objects (not the bundled Redis Cluster's)."""
    return [d for d in docs
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "channels-fleet"]
