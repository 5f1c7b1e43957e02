"""`helm lint --strict` on the defaults and on every ci/*-values.yaml."""

import pytest
import yaml

from .helm import CHART, CI_VALUES, SOURCE_CHART, helm, subchart_built


def test_ci_values_exist():
    assert len(CI_VALUES) >= 5, "charts/channels-fleet/ci/ holds the lint scenarios"


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_helm_lint_strict(values):
    args = ["lint", "--strict", str(CHART)]
    if values:
        args += ["-f", str(values)]
    result = helm(*args)
    lines = [ln for ln in result.stdout.splitlines() if ln and not ln.startswith("==> Linting")]
    note = "" if subchart_built() else " (redis-cluster not built: chart copy without it)"
    print(f"helm lint --strict {values.name if values else 'defaults'}{note}: {'; '.join(lines)}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_redis_cluster_is_an_optional_dependency():
    meta = yaml.safe_load((SOURCE_CHART / "Chart.yaml").read_text())
    (dep,) = meta["dependencies"]
    assert dep["name"] == "redis-cluster"
    assert dep["condition"] == "redisCluster.enabled"
    assert dep["repository"].startswith("oci://")
    values = yaml.safe_load((SOURCE_CHART / "values.yaml").read_text())
    assert values["redisCluster"]["enabled"] is False


def test_unbuilt_dependency_is_reported_with_the_fix():
    """What a user sees from a checkout before `helm dependency build` (documented)."""
    result = helm("template", "x", str(SOURCE_CHART))
    if subchart_built():
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert "helm dependency build" in result.stderr
