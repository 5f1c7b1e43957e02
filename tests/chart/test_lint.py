"""`helm lint --strict` on the defaults and on every ci/*-values.yaml, from a bare checkout."""

import pytest
import yaml

from .helm import CHART, CI_VALUES, SOURCE_CHART, helm


def test_ci_values_exist():
    assert len(CI_VALUES) >= 5, "charts/channels-fleet/ci/ holds the lint scenarios"


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_helm_lint_strict(values):
    args = ["lint", "--strict", str(CHART)]
    if values:
        args += ["-f", str(values)]
    result = helm(*args)
    lines = [ln for ln in result.stdout.splitlines() if ln and not ln.startswith("==> Linting")]
    print(f"helm lint --strict {values.name if values else 'defaults'}: {'; '.join(lines)}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_no_dependencies_nothing_to_fetch():
    """helm lint/template/install work from a checkout: no `dependencies:`, no charts/ dir."""
    meta = yaml.safe_load((SOURCE_CHART / "Chart.yaml").read_text())
    assert "dependencies" not in meta
    assert not (SOURCE_CHART / "charts").exists()
    assert not (SOURCE_CHART / "Chart.lock").exists()
    result = helm("template", "x", str(SOURCE_CHART))
    assert result.returncode == 0, result.stderr
