"""Generated and copied chart files stay in step with their sources."""

import subprocess
import sys

import pytest

from .helm import ROOT, SOURCE_CHART

# The chart ships the observability files as copies (a chart can only read files inside itself).
COPIES = {
    "files/prometheus-rules.yaml": "deploy/prometheus/channels-fleet.rules.yml",
    "files/grafana-dashboard.json": "deploy/grafana/channels-fleet.dashboard.json",
}


@pytest.mark.parametrize("copy", COPIES, ids=str)
def test_chart_copy_is_identical_to_the_source(copy):
    source = ROOT / COPIES[copy]
    if not source.exists():
        pytest.skip(f"{COPIES[copy]} is not in this checkout")
    assert (SOURCE_CHART / copy).read_bytes() == source.read_bytes(), (
        f"charts/channels-fleet/{copy} differs from {COPIES[copy]}: "
        f"cp {COPIES[copy]} charts/channels-fleet/{copy}")


def test_schema_and_readme_table_are_generated_from_values():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/chart-schema.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
