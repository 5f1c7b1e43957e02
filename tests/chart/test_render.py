"""What the chart renders: security, probes, drain timing, routing, autoscaling switches."""

import json

import pytest
import yaml

from .helm import CHART, SOURCE_CHART, find, helm, one, ours, render, subchart_built

CI = SOURCE_CHART / "ci"
ALL = CI / "30-all-features-values.yaml"
KEDA = CI / "40-keda-values.yaml"
COMPONENTS = ("interface", "worker", "web")


def deployments(docs):
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in find(docs, "Deployment")}


@pytest.fixture(scope="module")
def defaults():
    return render()


@pytest.fixture(scope="module")
def everything():
    return render(ALL, crds=True)


def test_defaults_render_the_three_components(defaults):
    assert set(deployments(defaults)) == set(COMPONENTS)
    kinds = sorted(d["kind"] for d in ours(defaults))
    assert kinds.count("PodDisruptionBudget") == 3
    assert kinds.count("Service") == 3
    # Optional objects stay off by default.
    for kind in ("Ingress", "NetworkPolicy", "HorizontalPodAutoscaler", "ServiceMonitor"):
        assert not find(ours(defaults), kind), kind


@pytest.mark.parametrize("component", COMPONENTS)
def test_pods_run_locked_down(defaults, component):
    pod = deployments(defaults)[component]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_probes_on_the_metrics_port(defaults, component):
    (c,) = deployments(defaults)[component]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == 9100
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    env = {e["name"]: e for e in c["env"]}
    assert env["CHANNELS_FLEET_METRICS_PORT"]["value"] == "9100"
    assert "CHANNELS_FLEET_REDIS_URL" in env


def test_commands_per_component(defaults):
    d = deployments(defaults)
    args = {k: v["spec"]["template"]["spec"]["containers"][0]["args"] for k, v in d.items()}
    assert args["interface"] == ["interface", "--port", "8000"]
    assert args["worker"] == ["worker", "chat_project.asgi:application"]
    assert args["web"] == ["web", "chat_project.wsgi:application", "--port", "8000"]
    images = {k: v["spec"]["template"]["spec"]["containers"][0]["image"] for k, v in d.items()}
    assert images["interface"] == "channels-fleet-interface:0.1.0"
    assert images["worker"] == images["web"] == "channels-fleet-chat:0.1.0"
    web_env = {e["name"]: e.get("value") for e in
               d["web"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert web_env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert web_env["DJANGO_SETTINGS_MODULE"] == "chat_project.settings"


def test_trusted_proxies_reach_the_interface(defaults):
    """config.forwardedAllowIps: off by default (no proxy's headers believed), else the env."""
    def interface_env(docs):
        (c,) = deployments(docs)["interface"]["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in c["env"]}

    assert "CHANNELS_FLEET_FORWARDED_ALLOW_IPS" not in interface_env(defaults)
    docs = render(sets=("config.forwardedAllowIps=10.244.0.0/16",))
    assert interface_env(docs)["CHANNELS_FLEET_FORWARDED_ALLOW_IPS"] == "10.244.0.0/16"


@pytest.mark.parametrize("drain", [25, 40])
def test_grace_period_covers_prestop_and_drain(drain):
    docs = render(sets=(f"config.drainTimeout={drain}",))
    for name, dep in deployments(docs).items():
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["CHANNELS_FLEET_DRAIN_TIMEOUT"] == str(drain)
        # preStop sleep (5) + drain + margin (10): SIGKILL never cuts a drain short.
        assert pod["terminationGracePeriodSeconds"] == 5 + drain + 10, name
        if name != "worker":  # pods behind a Service leave the Endpoints before the drain
            assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]


def _worker_env(docs):
    (c,) = deployments(docs)["worker"]["spec"]["template"]["spec"]["containers"]
    return c, {e["name"]: e for e in c["env"]}


def test_redis_url_from_values_goes_through_a_secret(defaults):
    (secret,) = find(defaults, "Secret")
    assert secret["metadata"]["name"] == "fleet-channels-fleet-redis"
    assert set(secret["data"]) == {"redis-url"}
    _, env = _worker_env(defaults)
    assert env["CHANNELS_FLEET_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleet-channels-fleet-redis", "key": "redis-url"}


def test_redis_url_from_an_existing_secret():
    docs = render(CI / "10-existing-secret-values.yaml")
    c, env = _worker_env(docs)
    assert env["CHANNELS_FLEET_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleet-redis", "key": "url"}
    assert c["envFrom"] == [{"secretRef": {"name": "chat-project-env"}}]
    assert not find(docs, "Secret"), "an existing Secret wins over the default redis.url"


def test_redis_url_of_the_bundled_cluster():
    docs = render(CI / "50-bundled-redis-cluster-values.yaml", crds=True)
    _, env = _worker_env(docs)
    assert env["CHANNELS_FLEET_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleet-redis-cluster", "key": "redis-password"}
    assert env["CHANNELS_FLEET_REDIS_URL"]["value"] == (
        "redis://:$(CHANNELS_FLEET_REDIS_PASSWORD)@fleet-redis-cluster:6379")
    assert not find(ours(docs), "Secret"), "the bundled cluster wins over redis.url"
    (so,) = find(docs, "ScaledObject")
    assert so["spec"]["triggers"][0]["metadata"]["addresses"] == "fleet-redis-cluster:6379"
    ta = one(docs, "TriggerAuthentication", "fleet-channels-fleet-worker")
    assert ta["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "fleet-redis-cluster", "key": "redis-password"}]


NOT_BUILT = ("bundled redis-cluster chart not built: run helm dependency build "
             "charts/channels-fleet where its registry is reachable")


@pytest.mark.skipif(not subchart_built(), reason=NOT_BUILT)
def test_bundled_cluster_objects_render():
    docs = render(CI / "50-bundled-redis-cluster-values.yaml")
    (sts,) = find(docs, "StatefulSet")
    assert sts["metadata"]["name"] == "fleet-redis-cluster"
    assert sts["spec"]["replicas"] == 6


def test_ingress_routes_ws_and_poll_to_interface_rest_to_web(everything):
    (ing,) = find(everything, "Ingress")
    for rule in ing["spec"]["rules"]:
        routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
        assert routes == {"/ws/": "fleet-channels-fleet-interface",
                          "/poll/": "fleet-channels-fleet-interface",
                          "/": "fleet-channels-fleet-web"}
    assert ing["spec"]["tls"][0]["secretName"] == "chat-tls"


@pytest.mark.parametrize("values", sorted(CI.glob("*-values.yaml")), ids=lambda p: p.name)
def test_no_ingress_backend_reaches_the_metrics_port(values):
    docs = render(values, crds=True)
    services = {s["metadata"]["name"]: s for s in find(docs, "Service")}
    for ing in find(docs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                port = path["backend"]["service"]["port"]
                assert port.get("name") not in ("metrics",) and port.get("number") != 9100
                svc = services[path["backend"]["service"]["name"]]
                (target,) = [p for p in svc["spec"]["ports"] if p["name"] == port.get("name")]
                assert target["targetPort"] == "http"


def test_network_policy_limits_the_metrics_port(everything):
    (np,) = find(ours(everything), "NetworkPolicy")
    by_port = {r["ports"][0]["port"]: r for r in np["spec"]["ingress"]}
    assert "from" not in by_port["http"], "allowExternal: public port from anywhere"
    assert by_port["metrics"]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        {"podSelector": {"matchLabels": {  # the release's `helm test` pod
            "app.kubernetes.io/name": "channels-fleet", "app.kubernetes.io/instance": "fleet",
            "app.kubernetes.io/component": "test"}}}]
    egress_ports = [p["port"] for r in np["spec"]["egress"] for p in r["ports"]]
    assert 53 in egress_ports and 6379 in egress_ports and 5432 in egress_ports


def test_locked_down_network_policy_admits_only_the_given_peers():
    (np,) = find(ours(render(CI / "20-locked-down-values.yaml")), "NetworkPolicy")
    http = [r for r in np["spec"]["ingress"] if r["ports"][0]["port"] == "http"][0]
    assert http["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"}


def test_interface_hpa_on_cpu_and_connections(everything):
    hpa = one(everything, "HorizontalPodAutoscaler", "fleet-channels-fleet-interface")
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["target"]["averageUtilization"] == 70
    assert kinds["Pods"]["pods"]["metric"]["name"] == "channels_fleet_open_connections"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    # The HPA owns the replica count: the Deployment leaves it out.
    assert "replicas" not in deployments(everything)["interface"]["spec"]


def test_worker_hpa_on_the_external_queue_metric(everything):
    hpa = one(everything, "HorizontalPodAutoscaler", "fleet-channels-fleet-worker")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "channels_fleet_work_queue_depth"
    assert metric["external"]["metric"]["selector"] == {
        "matchLabels": {"queue": "fleet.connect"}}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "20"}
    assert not find(everything, "ScaledObject")


def test_key_prefix_reaches_every_component_and_keda():
    """Two releases on one Redis: config.keyPrefix namespaces the relay, and KEDA reads that
    release's work queue."""
    docs = render(KEDA, sets=("config.keyPrefix=staging",), crds=True)
    for name, dep in deployments(docs).items():
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["CHANNELS_FLEET_KEY_PREFIX"] == "staging", name
    (trigger,) = one(docs, "ScaledObject", "fleet-channels-fleet-worker")["spec"]["triggers"]
    assert trigger["metadata"]["listName"] == "staging:q:{fleet.connect}"


def test_worker_keda_scaledobject_reads_the_work_queue_list():
    docs = render(KEDA, crds=True)
    so = one(docs, "ScaledObject", "fleet-channels-fleet-worker")
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "redis-cluster"
    assert trigger["metadata"]["listName"] == "fleet:q:{fleet.connect}"
    assert trigger["metadata"]["listLength"] == "10"
    assert trigger["metadata"]["addresses"] == (
        "redis-cluster-0.redis-cluster-headless:6379,redis-cluster-1.redis-cluster-headless:6379")
    assert trigger["authenticationRef"] == {"name": "fleet-channels-fleet-worker"}
    ta = one(docs, "TriggerAuthentication", "fleet-channels-fleet-worker")
    assert ta["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "fleet-redis", "key": "password"}]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 20)
    assert "replicas" not in deployments(docs)["worker"]["spec"]
    assert not find(docs, "HorizontalPodAutoscaler")


def test_keda_mode_without_the_keda_api_keeps_fixed_replicas():
    docs = render(KEDA)
    assert not find(docs, "ScaledObject")
    assert deployments(docs)["worker"]["spec"]["replicas"] == 2


def test_monitoring_objects_gated_on_their_api():
    without = render(ALL)
    assert not find(without, "ServiceMonitor") and not find(without, "PrometheusRule")
    assert find(without, "ConfigMap"), "the dashboard ConfigMap needs no CRD"


def test_servicemonitor_scrapes_the_metrics_port(everything):
    (sm,) = find(everything, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for svc in find(ours(everything), "Service"):
        assert "metrics" in [p["name"] for p in svc["spec"]["ports"]]


def test_prometheusrule_carries_the_rules_file(everything):
    (pr,) = find(everything, "PrometheusRule")
    source = yaml.safe_load((SOURCE_CHART / "files/prometheus-rules.yaml").read_text())
    assert pr["spec"]["groups"] == source["groups"]
    assert any("alert" in r for g in pr["spec"]["groups"] for r in g["rules"])


def test_dashboard_configmap_for_the_grafana_sidecar(everything):
    (cm,) = [c for c in find(everything, "ConfigMap")
             if c["metadata"]["name"].endswith("dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (body,) = cm["data"].values()
    source = SOURCE_CHART / "files/grafana-dashboard.json"
    assert json.loads(body) == json.loads(source.read_text())


def test_labels_and_selectors(defaults):
    for dep in find(defaults, "Deployment"):
        sel = dep["spec"]["selector"]["matchLabels"]
        assert set(sel) == {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                            "app.kubernetes.io/component"}
        assert sel.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    for obj in ours(defaults):
        labels = obj["metadata"]["labels"]
        assert labels["helm.sh/chart"] == "channels-fleet-0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert len(obj["metadata"]["name"]) <= 63


def test_long_release_names_are_cut_to_63(tmp_path):
    docs = render(sets=("fullnameOverride=" + "x" * 70,))
    for obj in ours(docs):
        assert len(obj["metadata"]["name"]) <= 63
    names = {d["metadata"]["name"] for d in find(docs, "Deployment")}
    assert len(names) == 3, "component suffixes survive the cut"


def test_pdbs_allow_one_disruption(defaults):
    for pdb in find(ours(defaults), "PodDisruptionBudget"):
        assert pdb["spec"]["maxUnavailable"] == 1


def test_kind_e2e_values_render_and_match_the_kind_port_mappings():
    """tests/e2e/kind/values.yaml is what make e2e-kind installs: it must render, and its
    NodePorts must be the ones kind-config.yaml maps to the host."""
    kind = SOURCE_CHART.parent.parent / "tests" / "e2e" / "kind"
    docs = render(kind / "values.yaml")
    node_ports = {s["metadata"]["name"]: s["spec"]["ports"][0]["nodePort"]
                  for s in find(docs, "Service") if s["spec"].get("type") == "NodePort"}
    config = yaml.safe_load((kind / "kind-config.yaml").read_text())
    mapped = {m["containerPort"] for m in config["nodes"][0]["extraPortMappings"]}
    assert node_ports == {"fleet-channels-fleet-interface": 30080,
                          "fleet-channels-fleet-web": 30081}
    assert set(node_ports.values()) <= mapped
    redis = {d["metadata"]["name"] for d in yaml.safe_load_all((kind / "redis.yaml").read_text())}
    assert redis == {"redis"}, "the chart's default redis.url points at the Service redis"
    images = {c["image"] for d in find(docs, "Deployment")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"localhost/channels-fleet-interface:latest",
                      "localhost/channels-fleet-chat:latest"}


@pytest.mark.parametrize("values", sorted(CI.glob("*-values.yaml")), ids=lambda p: p.name)
def test_notes_render_with_ready_to_paste_commands(values):
    result = helm("install", "fleet", str(CHART), "-n", "chat", "--dry-run=client", "-f",
                  str(values))
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n chat rollout status deployment/fleet-channels-fleet-interface" in notes
    assert "curl -s 127.0.0.1:9100/readyz" in notes
    assert "{{" not in notes and "<no value>" not in notes


def test_helm_test_pod_checks_every_component_readyz(defaults):
    (pod,) = find(defaults, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    assert c["args"][1:] == ["fleet-channels-fleet-interface", "fleet-channels-fleet-worker",
                             "fleet-channels-fleet-web"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("status", [200, 503])
def test_helm_test_script_fails_when_a_component_is_not_ready(status):
    """Run the test pod's own script against a real HTTP server answering /readyz."""
    import http.server
    import subprocess
    import sys
    import threading

    class Readyz(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(status if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        (pod,) = find(render(sets=(f"ports.metrics={port}",)), "Pod")
        script = pod["spec"]["containers"][0]["args"][0]
        proc = subprocess.run([sys.executable, "-c", script, "127.0.0.1"], capture_output=True,
                              text=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    print(proc.stdout.strip())
    assert proc.returncode == (0 if status == 200 else 1), proc.stdout + proc.stderr


def test_keda_on_a_single_redis_uses_the_plain_redis_scaler():
    from .test_kubernetes_schemas import validate_crds

    docs = render(KEDA, sets=("worker.autoscaling.keda.cluster=false",), crds=True)
    so = one(docs, "ScaledObject", "fleet-channels-fleet-worker")
    assert validate_crds([so])[0]["status"] == "valid"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["address"] == "redis-cluster-0.redis-cluster-headless:6379"
    assert trigger["metadata"]["listName"] == "fleet:q:{fleet.connect}"
