"""`helm lint --strict` on the defaults and on every ci/*-values.yaml."""

import pytest

from .helm import CHART, CI_VALUES, helm


def test_ci_values_exist():
    assert len(CI_VALUES) >= 4, "charts/channels-fleet/ci/ holds the lint scenarios"


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_helm_lint_strict(values):
    args = ["lint", "--strict", str(CHART)]
    if values:
        args += ["-f", str(values)]
    result = helm(*args)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
