"""Generated and copied chart files stay in step with their sources."""

import re
import subprocess
import sys

import pytest
import yaml

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


SELECTOR = re.compile(r"\b([a-z_:]+)\{([^{}]*)\}")


def test_every_rule_selector_carries_the_release_scope():
    """The chart narrows `release!=""` / `namespace!=""` to its own release (prometheusrule.yaml):
    a selector without either would see every release, and two releases would alert twice."""
    rules = yaml.safe_load((ROOT / COPIES["files/prometheus-rules.yaml"]).read_text())
    unscoped = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            for metric, matchers in SELECTOR.findall(rule["expr"]):
                own = metric.startswith(("channels_fleet_", "channels_fleet:"))  # recorded too
                if ('release!=""' if own else 'namespace!=""') not in matchers:
                    unscoped.append(f"{rule.get('alert') or rule.get('record')}: {metric}")
            bare = re.findall(r"(?<![\w:])(channels_fleet[_:][\w:]*\w|kube_\w+)(?![\w:{])",
                              rule["expr"])
            unscoped += [f"{rule.get('alert') or rule.get('record')}: {m} (no selector)"
                         for m in bare]
    assert not unscoped, unscoped
