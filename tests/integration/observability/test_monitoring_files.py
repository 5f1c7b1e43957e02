"""The alert rules, their promtool unit tests, our exposition format and the dashboard's queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from promserver import run_promtool

from channels_fleet.observability.metrics import ALL_NAMES, FleetMetrics
from channels_fleet.observability.queues import QueueReading, queue_families

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "channels-fleet.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "channels-fleet.rules.test.yml"
SCALING_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "channels-fleet.scaling.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "channels-fleet.dashboard.json"

NAME = re.compile(r"\bchannels_fleet_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def family(name: str) -> str:
    """channels_fleet_x_seconds_bucket -> channels_fleet_x_seconds."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in ALL_NAMES:
            return name.removesuffix(suffix)
    return name


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, rows included."""
    data = json.loads(DASHBOARD.read_text())
    found = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(data["panels"])
    return found


def test_rules_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_scaling_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(SCALING_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


# What the worker autoscaler read before saturation (KEDA's listLength / the HPA's AverageValue
# of 20 waiting connects per worker: desired = ceil(depth / 20)), in the units of the saturation
# rule (desired = ceil(current x saturation / 0.7)), so the scaling tests' decisions apply as is.
QUEUE_ONLY_SATURATION = (
    '0.7 * max by (namespace, release) '
    '(channels_fleet_work_queue_depth{release!="",queue="fleet.connect"}) / 20 '
    '/ count by (namespace, release) (channels_fleet_owned_connections_limit{release!=""} > 0)'
)


def test_queue_only_scaling_fails_the_steady_load_cases(tmp_path: Path) -> None:
    """The scaling tests catch the flapping autoscaler: with the queue as its only input, the
    steady-load and CPU-bound cases fail (the queue is empty, it wants the minimum), while the
    burst and idle ones still pass."""
    rules = yaml.safe_load(RULES.read_text())
    swapped = [rule for group in rules["groups"] for rule in group["rules"]
               if rule.get("record") == "channels_fleet:worker_saturation:ratio"]
    assert len(swapped) == 1
    swapped[0]["expr"] = QUEUE_ONLY_SATURATION
    (tmp_path / "channels-fleet.rules.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests").mkdir()
    suite = yaml.safe_load(SCALING_TESTS.read_text())
    outcome = {}
    for n, case in enumerate(suite["tests"]):
        one = tmp_path / "tests" / f"case{n}.test.yml"
        one.write_text(yaml.safe_dump({**suite, "tests": [case]}))
        outcome[case["name"]] = run_promtool("test", "rules", str(one)).returncode == 0
    print("queue-only autoscaler on the scaling tests:",
          {name: "pass" if ok else "FAIL" for name, ok in outcome.items()})
    failed = {name for name, ok in outcome.items() if not ok}
    assert failed == {name for name in outcome
                      if name.startswith(("steady load", "CPU-bound"))}, outcome
    assert len(failed) == 3


def test_every_alert_has_a_unit_test_and_a_runbook() -> None:
    rules = RULES.read_text()
    alerts = re.findall(r"^\s+- alert: (\w+)", rules, re.M)
    assert len(alerts) >= 6
    tests = RULE_TESTS.read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    for alert in alerts:
        assert f"alertname: {alert}" in tests, f"{alert} has no promtool unit test"
        assert (f"runbook_url: https://github.com/channels-fleet/channels-fleet/blob/main/"
                f"docs/operations.md#{alert.lower()}") in rules
        assert f"### {alert}" in operations, f"{alert} has no runbook in docs/operations.md"


def test_rules_use_only_declared_metrics() -> None:
    names = {family(n) for n in NAME.findall(RULES.read_text())}
    assert names and names <= ALL_NAMES, names - ALL_NAMES


class QueueFamilies:
    """What a QueueCollector exports for ``readings``, without Redis."""

    def __init__(self, readings: list[QueueReading]) -> None:
        self.readings = readings

    def collect(self):
        return queue_families(self.readings)


def test_our_exposition_passes_promtool_check_metrics() -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    # Touch every family, including the ones whose labels are only known at run time.
    metrics.redis_node_up.labels("10.0.0.1:6379").set(1)
    registry.register(QueueFamilies([QueueReading("fleet.connect", 3, 0.4)]))
    metrics.handler_latency.labels("chat.consumers.ChatConsumer").observe(0.002)
    metrics.relay_roundtrip.observe(0.001)
    metrics.queue_wait.observe(0.0003)
    metrics.ready.labels("worker").set(1)
    metrics.worker_heartbeat_age.set(1.5)
    metrics.owned_connections_limit.set(1000)
    metrics.event_loop_lag.labels("worker").observe(0.0004)
    metrics.web_requests.labels("GET", "2xx").inc()
    metrics.web_request_duration.labels("GET").observe(0.012)
    exposition = generate_latest(registry)
    exposed = {family(n) for n in NAME.findall(exposition.decode())}
    assert ALL_NAMES <= exposed | {n.removesuffix("_total") for n in exposed}
    result = run_promtool("check", "metrics", stdin=exposition)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_dashboard_queries_use_only_declared_metrics() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    used = set()
    for title, expr in queries:
        names = {family(n) for n in NAME.findall(expr)}
        assert names, f"panel {title!r} queries no channels_fleet_* metric: {expr}"
        undeclared = names - ALL_NAMES
        assert not undeclared, f"panel {title!r} uses undeclared {undeclared}"
        used |= names
    # And the other way round: every metric we declare is on the dashboard.
    assert used == ALL_NAMES, ALL_NAMES - used


def test_dashboard_is_importable_by_grafana() -> None:
    data = json.loads(DASHBOARD.read_text())
    assert data["uid"] == "channels-fleet" and data["schemaVersion"] >= 36
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in data["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"], panel["title"]

