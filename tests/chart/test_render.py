"""What the chart renders: a working stack by default (its own Redis Cluster and PostgreSQL,
migrations, pullable images), security, probes, drain timing, routing, autoscaling switches."""

import base64
import json
import re

import pytest
import yaml

from .helm import SOURCE_CHART, component, find, helm, one, render

CI = SOURCE_CHART / "ci"
ALL = CI / "30-all-features-values.yaml"
KEDA = CI / "40-keda-values.yaml"
SMALL = CI / "50-small-values.yaml"
COMPONENTS = ("interface", "worker", "web")
CI_FILES = sorted(CI.glob("*-values.yaml"))


def deployments(docs):
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
            for d in find(docs, "Deployment")}


def pod_templates(docs):
    """(name, pod spec) of every workload: Deployments, StatefulSets, Jobs, the test Pod."""
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield d["metadata"]["name"], d["spec"]


def containers(pod):
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def secret_value(docs, name, key):
    return base64.b64decode(one(docs, "Secret", name)["data"][key]).decode()


@pytest.fixture(scope="module")
def defaults():
    return render()


@pytest.fixture(scope="module")
def everything():
    return render(ALL, crds=True)


# --- a working stack by default ---------------------------------------------------------------

def test_defaults_render_a_whole_stack(defaults):
    assert set(deployments(defaults)) == set(COMPONENTS)
    assert {s["metadata"]["name"] for s in find(defaults, "StatefulSet")} == {
        *(f"fleet-channels-fleet-redis-shard-{n}" for n in range(3)),
        "fleet-channels-fleet-postgresql"}
    assert {j["metadata"]["name"].rsplit("-", 1)[0] for j in find(defaults, "Job")} == {
        "fleet-channels-fleet-migrate", "fleet-channels-fleet-secrets"}
    assert {s["metadata"]["name"] for s in find(defaults, "Service")} == {
        "fleet-channels-fleet-interface", "fleet-channels-fleet-web",
        "fleet-channels-fleet-interface-metrics", "fleet-channels-fleet-worker-metrics",
        "fleet-channels-fleet-web-metrics", "fleet-channels-fleet-redis",
        "fleet-channels-fleet-redis-headless", "fleet-channels-fleet-postgresql"}
    assert len(find(defaults, "PodDisruptionBudget")) == 3 + 3  # a Redis budget per shard
    # Optional objects stay off by default.
    for kind in ("Ingress", "HTTPRoute", "NetworkPolicy", "HorizontalPodAutoscaler",
                 "ServiceMonitor", "PrometheusRule"):
        assert not find(defaults, kind), kind


IMAGE = re.compile(r"^(localhost|[a-z0-9-]+(\.[a-z0-9-]+)+)(:[0-9]+)?/[a-z0-9._/-]+([:@].+)$")


@pytest.mark.parametrize("values", [None, *CI_FILES], ids=lambda v: v.name if v else "defaults")
def test_every_image_names_its_registry_host(values):
    docs = render(*([values] if values else []), crds=True)
    images = {c["image"] for _, pod in pod_templates(docs) for c in containers(pod)}
    assert images
    bare = sorted(i for i in images if not IMAGE.match(i))
    assert not bare, f"images without a registry host: {bare}"


def test_default_images_are_the_published_and_official_ones(defaults):
    images = {c["name"]: c["image"]
              for _, pod in pod_templates(defaults) for c in pod["containers"]}
    assert images["interface"] == "ghcr.io/channels-fleet/channels-fleet-interface:0.1.0"
    assert images["worker"] == images["web"] == images["migrate"] == (
        "ghcr.io/channels-fleet/channels-fleet-chat:0.1.0")
    assert re.fullmatch(r"docker\.io/valkey/valkey:8\.\d+\.\d+", images["valkey"])
    assert re.fullmatch(r"docker\.io/library/postgres:17\.\d+", images["postgresql"])


def test_image_values_alone_point_the_chart_at_local_images():
    """What a cluster without registry access sets (tests/e2e/k8s): registry/repository/tag."""
    docs = render(sets=(
        "interfaceImage.registry=localhost", "interfaceImage.repository=channels-fleet-interface",
        "interfaceImage.tag=latest", "projectImage.registry=localhost",
        "projectImage.repository=channels-fleet-chat", "projectImage.tag=latest",
        "redis.image.registry=localhost", "redis.image.repository=valkey-standin",
        "redis.image.tag=latest", "database.postgresql.image.registry=localhost",
        "database.postgresql.image.repository=postgres-standin",
        "database.postgresql.image.tag=latest"))
    images = {c["image"] for _, pod in pod_templates(docs) for c in containers(pod)}
    assert images == {"localhost/channels-fleet-interface:latest",
                      "localhost/channels-fleet-chat:latest", "localhost/valkey-standin:latest",
                      "localhost/postgres-standin:latest"}


def test_default_cpu_requests_fit_a_small_node(defaults):
    """2 CPUs shared with the control plane: the release asks for at most 1.3 CPU (0.6 of it
    the 6 Redis pods' Guaranteed 100m each)."""
    def millicores(value):
        return int(value[:-1]) if value.endswith("m") else int(float(value) * 1000)

    total = 0
    for d in find(defaults, "Deployment") + find(defaults, "StatefulSet"):
        pod = d["spec"]["template"]["spec"]
        per_pod = sum(millicores(c["resources"]["requests"]["cpu"]) for c in pod["containers"])
        total += per_pod * d["spec"]["replicas"]
    print(f"CPU requests at defaults: {total}m")
    assert total <= 1300, total


# --- security ---------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [None, ALL], ids=["defaults", "all-features"])
def test_every_pod_runs_locked_down(values):
    docs = render(*([values] if values else []), crds=True)
    for name, pod in pod_templates(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        # Only the secrets Job talks to the API server, with its own ServiceAccount.
        assert pod["automountServiceAccountToken"] is ("-secrets-" in name), name
        for c in containers(pod):
            sc = c["securityContext"]
            where = f"{name}/{c['name']}"
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] in (10001, 999), where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where


def test_redis_and_postgresql_run_as_the_official_images_uid(defaults):
    for sts in find(defaults, "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 999
        assert pod["securityContext"]["fsGroup"] == 999
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert "/tmp" in mounts


@pytest.mark.parametrize("name", COMPONENTS)
def test_probes_on_the_metrics_port(defaults, name):
    (c,) = deployments(defaults)[name]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == 9100
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    env = env_of(c)
    assert env["CHANNELS_FLEET_METRICS_PORT"]["value"] == "9100"
    assert "CHANNELS_FLEET_REDIS_URL" in env


def test_commands_per_component(defaults):
    d = deployments(defaults)
    args = {k: v["spec"]["template"]["spec"]["containers"][0]["args"] for k, v in d.items()}
    assert args["interface"] == ["interface", "--port", "8000"]
    assert args["worker"] == ["worker", "chat_project.asgi:application"]
    assert args["web"] == ["web", "chat_project.wsgi:application", "--port", "8000"]
    web_env = {k: v.get("value") for k, v in
               env_of(d["web"]["spec"]["template"]["spec"]["containers"][0]).items()}
    assert web_env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert web_env["DJANGO_SETTINGS_MODULE"] == "chat_project.settings"


def test_trusted_proxies_reach_the_interface(defaults):
    """config.forwardedAllowIps: off by default (no proxy's headers believed), else the env."""
    def interface_env(docs):
        (c,) = deployments(docs)["interface"]["spec"]["template"]["spec"]["containers"]
        return {k: v.get("value") for k, v in env_of(c).items()}

    assert "CHANNELS_FLEET_FORWARDED_ALLOW_IPS" not in interface_env(defaults)
    docs = render(sets=("config.forwardedAllowIps=10.244.0.0/16",))
    assert interface_env(docs)["CHANNELS_FLEET_FORWARDED_ALLOW_IPS"] == "10.244.0.0/16"


# --- ports: public Services carry the public port alone ---------------------------------------

@pytest.mark.parametrize("values", [None, *CI_FILES], ids=lambda v: v.name if v else "defaults")
def test_public_services_expose_only_the_public_port(values):
    docs = render(*([values] if values else []), crds=True)
    for name in ("fleet-channels-fleet-interface", "fleet-channels-fleet-web"):
        for svc in find(docs, "Service", name):
            assert [p["name"] for p in svc["spec"]["ports"]] == ["http"], name
            assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"], name
    for svc in find(docs, "Service"):
        if svc["metadata"]["name"].endswith("-metrics"):
            assert svc["spec"]["clusterIP"] == "None"
            assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
            assert svc["metadata"]["labels"]["channels-fleet/metrics"] == "true"


def test_load_balancer_exposes_no_metrics():
    docs = render(sets=("interface.service.type=LoadBalancer", "web.service.type=LoadBalancer"))
    for svc in find(docs, "Service"):
        if svc["spec"].get("type") == "LoadBalancer":
            ports = {p["targetPort"] for p in svc["spec"]["ports"]}
            assert ports == {"http"}, svc["metadata"]["name"]


# --- rollouts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("drain", [25, 40])
def test_grace_period_covers_prestop_drain_and_margin_for_every_pod_kind(drain):
    docs = render(sets=(f"config.drainTimeout={drain}",))
    for name, dep in deployments(docs).items():
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert env_of(c)["CHANNELS_FLEET_DRAIN_TIMEOUT"]["value"] == str(drain)
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        pause = int(pre_stop[1]) if pre_stop else 0
        # preStop sleep (5) + drain + margin (10): SIGKILL never cuts a drain short.
        assert pod["terminationGracePeriodSeconds"] >= pause + drain + 10, name
        if name != "worker":  # pods behind a Service leave the Endpoints before the drain
            assert pre_stop == ["sleep", "5"]
    for sts in find(docs, "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        # Redis preStop: a failover of at most 10 s; PostgreSQL: pg_ctl stop -t 20.
        assert pod["terminationGracePeriodSeconds"] >= 30, sts["metadata"]["name"]
        assert pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]


def test_interfaces_surge_every_new_pod_before_any_old_one_drains(defaults):
    spec = deployments(defaults)["interface"]["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}}
    assert spec["minReadySeconds"] >= 5
    for name in ("worker", "web"):
        assert deployments(defaults)[name]["spec"]["strategy"]["rollingUpdate"][
            "maxUnavailable"] == 0


def test_strategy_is_configurable():
    docs = render(sets=("interface.strategy.rollingUpdate.maxSurge=1",
                        "interface.minReadySeconds=0"))
    spec = deployments(docs)["interface"]["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 1
    assert spec["minReadySeconds"] == 0


def test_two_workers_minimum(defaults):
    assert deployments(defaults)["worker"]["spec"]["replicas"] == 2
    values = yaml.safe_load((SOURCE_CHART / "values.yaml").read_text())
    assert values["worker"]["autoscaling"]["minReplicas"] == 2


def test_pdbs_allow_one_disruption_and_always_evict_unhealthy_pods(defaults):
    pdbs = find(defaults, "PodDisruptionBudget")
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pdbs} == {
        "interface", "worker", "web", "redis"}
    for pdb in pdbs:
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def _checksums(docs, kind, name):
    return {k: v for k, v in one(docs, kind, name)["spec"]["template"]["metadata"].get(
        "annotations", {}).items() if k.startswith("checksum/")}


def test_checksums_roll_the_pods_that_read_a_changed_secret_or_config(defaults):
    # The generated passwords are no part of the render, so no checksum follows them.
    assert _checksums(defaults, "StatefulSet", "fleet-channels-fleet-redis-shard-0") == {
        "checksum/redis-configmap": _checksums(defaults, "StatefulSet",
                                               "fleet-channels-fleet-redis-shard-1")[
            "checksum/redis-configmap"]}
    for kind, name in [("Deployment", "fleet-channels-fleet-interface"),
                       ("Deployment", "fleet-channels-fleet-worker"),
                       ("Deployment", "fleet-channels-fleet-web"),
                       ("StatefulSet", "fleet-channels-fleet-postgresql")]:
        assert not _checksums(defaults, kind, name), name
    a = render(sets=("database.external.url=postgres://u:p@db:5432/a",
                     "redis.external.url=redis://r:6379"))
    b = render(sets=("database.external.url=postgres://u:p@db:5432/b",
                     "redis.external.url=redis://r:6379"))
    for name in ("worker", "web"):
        full = f"fleet-channels-fleet-{name}"
        assert (_checksums(a, "Deployment", full)["checksum/database-secret"]
                != _checksums(b, "Deployment", full)["checksum/database-secret"])
        assert (_checksums(a, "Deployment", full)["checksum/redis-secret"]
                == _checksums(b, "Deployment", full)["checksum/redis-secret"])
    assert "checksum/database-secret" not in _checksums(a, "Deployment",
                                                        "fleet-channels-fleet-interface")
    c = render(sets=("redis.extraConfig=appendonly yes",))
    assert (_checksums(c, "StatefulSet", "fleet-channels-fleet-redis-shard-0")[
        "checksum/redis-configmap"] != _checksums(defaults, "StatefulSet",
                                                  "fleet-channels-fleet-redis-shard-0")[
        "checksum/redis-configmap"])


# --- Redis --------------------------------------------------------------------------------------

def _worker_env(docs):
    (c,) = deployments(docs)["worker"]["spec"]["template"]["spec"]["containers"]
    return c, env_of(c)


def test_built_in_redis_cluster(defaults):
    sts = one(defaults, "StatefulSet", "fleet-channels-fleet-redis-shard-1")
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == "fleet-channels-fleet-redis-headless"
    pod = sts["spec"]["template"]["spec"]
    (valkey,) = pod["containers"]
    assert valkey["command"] == ["sh", "/scripts/node.sh", "start"]
    env = env_of(valkey)
    assert (env["MASTERS"]["value"], env["REPLICAS_PER_MASTER"]["value"]) == ("3", "1")
    assert (env["SHARD"]["value"], env["SHARD_PREFIX"]["value"]) == (
        "1", "fleet-channels-fleet-redis-shard-")
    assert env["PEER_DOMAIN"]["value"] == "fleet-channels-fleet-redis-headless.chat.svc"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleet-channels-fleet-redis-auth", "key": "redis-password"}
    assert valkey["readinessProbe"]["exec"]["command"][-1] == "ready"
    assert valkey["lifecycle"]["preStop"]["exec"]["command"][-1] == "prestop"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["data"], "no persistence by default: nodes rejoin empty"
    assert "volumeClaimTemplates" not in sts["spec"]
    headless = one(defaults, "Service", "fleet-channels-fleet-redis-headless")
    assert headless["spec"]["publishNotReadyAddresses"] is True
    script = one(defaults, "ConfigMap", "fleet-channels-fleet-redis")["data"]["node.sh"]
    assert script == (SOURCE_CHART / "files/redis/node.sh").read_text().rstrip("\n")


def test_redis_shards_pods_never_share_a_node_and_spread_over_zones(defaults):
    for shard in range(3):
        sts = one(defaults, "StatefulSet", f"fleet-channels-fleet-redis-shard-{shard}")
        own = {**sts["spec"]["selector"]["matchLabels"]}
        assert own["channels-fleet.io/shard"] == str(shard)
        assert sts["spec"]["template"]["metadata"]["labels"].items() >= own.items()
        pod = sts["spec"]["template"]["spec"]
        anti = pod["affinity"]["podAntiAffinity"]
        (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term == {"topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": own}}
        zone, hosts = pod["topologySpreadConstraints"]
        assert (zone["topologyKey"], zone["labelSelector"]["matchLabels"]) == (
            "topology.kubernetes.io/zone", own)
        assert hosts["topologyKey"] == "kubernetes.io/hostname"
        pdb = one(defaults, "PodDisruptionBudget", f"fleet-channels-fleet-redis-shard-{shard}")
        assert pdb["spec"]["selector"]["matchLabels"] == own


def test_redis_soft_anti_affinity_keeps_the_users_terms():
    docs = render(sets=("redis.cluster.antiAffinity=soft",
                        "redis.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                        ".nodeSelectorTerms[0].matchExpressions[0].key=pool",
                        "redis.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                        ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists"))
    pod = one(docs, "StatefulSet", "fleet-channels-fleet-redis-shard-0")["spec"]["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    (preferred,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["labelSelector"]["matchLabels"][
        "channels-fleet.io/shard"] == "0"
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


def test_small_install_runs_one_master():
    docs = render(SMALL)
    sts = one(docs, "StatefulSet", "fleet-channels-fleet-redis-shard-0")
    assert sts["spec"]["replicas"] == 1
    env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
    assert (env["MASTERS"]["value"], env["REPLICAS_PER_MASTER"]["value"]) == ("1", "0")


def test_redis_url_from_the_generated_password_secret(defaults):
    """The password Secret is made in the cluster (test_gitops.py); Kubernetes puts the URL
    together from it ($(VAR)): the generated password is letters and digits, URL-safe."""
    assert not find(defaults, "Secret")
    _, env = _worker_env(defaults)
    assert env["CHANNELS_FLEET_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleet-channels-fleet-redis-auth", "key": "redis-password"}
    assert env["CHANNELS_FLEET_REDIS_URL"]["value"] == (
        "redis://:$(CHANNELS_FLEET_REDIS_PASSWORD)@fleet-channels-fleet-redis:6379")


def test_redis_password_from_an_existing_secret(everything):
    _, env = _worker_env(everything)
    assert env["CHANNELS_FLEET_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "chat-redis", "key": "redis-password"}
    assert env["CHANNELS_FLEET_REDIS_URL"]["value"] == (
        "redis://:$(CHANNELS_FLEET_REDIS_PASSWORD)@fleet-channels-fleet-redis:6379")
    names = list(env)
    assert names.index("CHANNELS_FLEET_REDIS_PASSWORD") < names.index("CHANNELS_FLEET_REDIS_URL")
    assert not find(everything, "Secret", "fleet-channels-fleet-redis")


def test_redis_persistence_and_exporter(everything):
    sts = one(everything, "StatefulSet", "fleet-channels-fleet-redis-shard-0")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == ""  # "-": none, for pre-bound volumes
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    names = [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]]
    assert names == ["valkey", "exporter"]
    svc = one(everything, "Service", "fleet-channels-fleet-redis-metrics")
    assert [p["name"] for p in svc["spec"]["ports"]] == ["redis-metrics"]


def test_external_redis_and_database_from_existing_secrets():
    docs = render(CI / "10-existing-secret-values.yaml")
    c, env = _worker_env(docs)
    assert env["CHANNELS_FLEET_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleet-redis", "key": "url"}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "chat-database",
                                                                "key": "url"}
    assert c["envFrom"] == [{"secretRef": {"name": "chat-project-env"}}]
    assert not find(docs, "Secret") and not find(docs, "StatefulSet")
    assert not component(docs, "Service", "redis")


def test_external_redis_url_goes_through_a_secret():
    docs = render(sets=("redis.external.url=rediss://:p@cache.example:6379",))
    assert secret_value(docs, "fleet-channels-fleet-redis", "redis-url") == (
        "rediss://:p@cache.example:6379")
    assert "redis-password" not in one(docs, "Secret", "fleet-channels-fleet-redis")["data"]
    assert not [s for s in find(docs, "StatefulSet") if "redis" in s["metadata"]["name"]]


# --- database and migrations -------------------------------------------------------------------

def test_bundled_postgresql(defaults):
    sts = one(defaults, "StatefulSet", "fleet-channels-fleet-postgresql")
    (pg,) = sts["spec"]["template"]["spec"]["containers"]
    env = env_of(pg)
    assert env["PGDATA"]["value"] == "/var/lib/postgresql/data/pgdata"
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleet-channels-fleet-postgresql-auth", "key": "postgres-password"}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert "storageClassName" not in claim["spec"], "the cluster's default StorageClass"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_database_url_reaches_worker_web_and_migrate_from_the_password_secret(defaults):
    for _, pod in pod_templates(defaults):
        for c in containers(pod):
            if c["image"].endswith("channels-fleet-chat:0.1.0") and c["name"] != "wait-for-redis":
                env = env_of(c)
                assert env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                    "name": "fleet-channels-fleet-postgresql-auth", "key": "postgres-password"}
                assert env["DATABASE_URL"]["value"] == (
                    "postgres://app:$(DATABASE_PASSWORD)@fleet-channels-fleet-postgresql:5432/app")


def test_external_database_url_goes_through_a_secret():
    docs = render(sets=("database.external.url=postgres://u:p@db.example:5432/app",))
    assert secret_value(docs, "fleet-channels-fleet-database", "database-url") == (
        "postgres://u:p@db.example:5432/app")
    _, env = _worker_env(docs)
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "fleet-channels-fleet-database", "key": "database-url"}


def migrate_job(docs):
    (job,) = component(docs, "Job", "migrate")
    return job


def test_migrate_job_waits_for_the_database_then_migrates(defaults):
    job = migrate_job(defaults)
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
    pod = job["spec"]["template"]["spec"]
    (wait,) = pod["initContainers"]
    assert wait["name"] == "wait-for-database" and "ensure_connection" in wait["command"][-1]
    (migrate,) = pod["containers"]
    assert migrate["command"] == ["python3", "manage.py", "migrate", "--noinput"]
    assert pod["restartPolicy"] == "Never"


def test_migrate_job_is_named_by_what_it_runs(defaults):
    """Not by the revision (always 1 under helm template, Argo CD): a new image or command is a
    new Job (a Job's pod template is immutable), the same one keeps its name."""
    name = migrate_job(defaults)["metadata"]["name"]
    assert re.fullmatch(r"fleet-channels-fleet-migrate-[0-9a-f]{10}", name)
    upgrade = helm("template", "fleet", str(SOURCE_CHART), "-n", "chat", "--is-upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"name: {name}\n" in upgrade.stdout
    assert migrate_job(render(sets=("interface.replicaCount=1", "web.replicaCount=3")))["metadata"][
        "name"] == name, "a value the Job does not run changed its name"
    for changed in ("projectImage.tag=0.2.0", "database.migrate.command={python3,m.py}",
                    "project.settingsModule=other.settings", "database.postgresql.database=other"):
        renamed = migrate_job(render(sets=(changed,)))["metadata"]["name"]
        assert renamed != name, changed


@pytest.mark.parametrize("name", ["worker", "web"])
def test_worker_and_web_start_once_migrations_are_applied(defaults, name):
    pod = deployments(defaults)[name]["spec"]["template"]["spec"]
    init = pod["initContainers"][-1]
    assert init["name"] == "wait-for-migrations"
    assert init["command"][-4:] == ["python3", "manage.py", "migrate", "--check"]


def init_names(docs):
    return {name: [c["name"] for c in d["spec"]["template"]["spec"].get("initContainers", [])]
            for name, d in deployments(docs).items()}


def test_interface_and_worker_start_once_the_redis_cluster_has_formed(defaults):
    # Else they exit 3 and restart while the bundled cluster forms on a fresh install.
    assert init_names(defaults) == {"interface": ["wait-for-redis"],
                                    "worker": ["wait-for-redis", "wait-for-migrations"],
                                    "web": ["wait-for-migrations"]}
    for name in ("interface", "worker"):
        pod = deployments(defaults)[name]["spec"]["template"]["spec"]
        wait, app = pod["initContainers"][0], pod["containers"][0]
        assert wait["image"] == app["image"]
        # The module the image carries (tests/integration/test_redis_wait.py runs it).
        assert wait["command"] == ["python3", "-m", "channels_fleet.redis_wait"]
        assert env_of(wait)["CHANNELS_FLEET_REDIS_URL"] == env_of(app)["CHANNELS_FLEET_REDIS_URL"]
        assert wait["securityContext"] == app["securityContext"]


def test_migrations_off_means_no_job_and_no_wait():
    docs = render(sets=("database.migrate.enabled=false",))
    assert not component(docs, "Job", "migrate")
    assert init_names(docs) == {"interface": ["wait-for-redis"], "worker": ["wait-for-redis"],
                                "web": []}


def test_postgresql_password_from_an_existing_secret(everything):
    _, env = _worker_env(everything)
    assert env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "chat-postgres", "key": "password"}
    assert env["DATABASE_URL"]["value"] == (
        "postgres://app:$(DATABASE_PASSWORD)@fleet-channels-fleet-postgresql:5432/app")
    sts = one(everything, "StatefulSet", "fleet-channels-fleet-postgresql")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-ssd"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"


def test_small_install_database_on_an_emptydir():
    sts = one(render(SMALL), "StatefulSet", "fleet-channels-fleet-postgresql")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]


# --- routing -----------------------------------------------------------------------------------

def test_ingress_routes_ws_and_poll_to_interface_rest_to_web(everything):
    (ing,) = find(everything, "Ingress")
    for rule in ing["spec"]["rules"]:
        routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
        assert routes == {"/ws/": "fleet-channels-fleet-interface",
                          "/poll/": "fleet-channels-fleet-interface",
                          "/": "fleet-channels-fleet-web"}
    assert ing["spec"]["tls"][0]["secretName"] == "chat-tls"


def test_ingress_carries_no_controller_annotations_by_default():
    (ing,) = find(render(sets=("ingress.enabled=true",)), "Ingress")
    assert not ing["metadata"].get("annotations")


def test_httproute_beside_the_ingress(everything):
    route = one(everything, "HTTPRoute", "fleet-channels-fleet")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [
        {"name": "public", "namespace": "gateway-system", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == ["chat.example.com"]
    iface, web = route["spec"]["rules"]
    assert [m["path"] for m in iface["matches"]] == [
        {"type": "PathPrefix", "value": "/ws/"}, {"type": "PathPrefix", "value": "/poll/"}]
    assert iface["backendRefs"] == [{"name": "fleet-channels-fleet-interface", "port": 8000}]
    assert web["backendRefs"] == [{"name": "fleet-channels-fleet-web", "port": 8000}]
    assert iface["timeouts"] == {"request": "0s"}


@pytest.mark.parametrize("values", CI_FILES, ids=lambda p: p.name)
def test_no_route_reaches_the_metrics_port(values):
    docs = render(values, crds=True)
    services = {s["metadata"]["name"]: s for s in find(docs, "Service")}
    backends = []
    for ing in find(docs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                svc = path["backend"]["service"]
                backends.append((svc["name"], svc["port"].get("name"), svc["port"].get("number")))
    for route in find(docs, "HTTPRoute"):
        for rule in route["spec"]["rules"]:
            backends += [(b["name"], None, b["port"]) for b in rule["backendRefs"]]
    for name, port_name, number in backends:
        (target,) = [p for p in services[name]["spec"]["ports"]
                     if p["name"] == port_name or p["port"] == number]
        assert target["targetPort"] == "http", (name, port_name, number)


# --- network policy ----------------------------------------------------------------------------

def test_network_policy_limits_the_metrics_port(everything):
    np = one(everything, "NetworkPolicy", "fleet-channels-fleet")
    by_port = {r["ports"][0]["port"]: r for r in np["spec"]["ingress"]}
    assert "from" not in by_port["http"], "allowExternal: public port from anywhere"
    assert by_port["metrics"]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
        {"podSelector": {"matchLabels": {  # the release's `helm test` pod
            "app.kubernetes.io/name": "channels-fleet", "app.kubernetes.io/instance": "fleet",
            "app.kubernetes.io/component": "test"}}}]
    egress_ports = [p["port"] for r in np["spec"]["egress"] for p in r["ports"]]
    assert 53 in egress_ports and 6379 in egress_ports and 5432 in egress_ports
    assert 443 in egress_ports


def test_locked_down_network_policies_for_the_release_and_its_stores():
    docs = render(CI / "20-locked-down-values.yaml")
    np = one(docs, "NetworkPolicy", "fleet-channels-fleet")
    http = [r for r in np["spec"]["ingress"] if r["ports"][0]["port"] == "http"][0]
    assert http["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-controllers"}
    redis_egress = [r for r in np["spec"]["egress"] if r["ports"][0]["port"] == 6379][0]
    assert redis_egress["to"][0]["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "redis"
    redis = one(docs, "NetworkPolicy", "fleet-channels-fleet-redis")
    clients = redis["spec"]["ingress"][0]["from"]
    assert clients[0] == {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "channels-fleet", "app.kubernetes.io/instance": "fleet"}}}
    assert len(clients) == 1  # KEDA reads Prometheus, not Redis: nobody else by default
    pg = one(docs, "NetworkPolicy", "fleet-channels-fleet-postgresql")
    assert pg["spec"]["egress"] == []
    assert pg["spec"]["ingress"][0]["ports"] == [{"port": "postgresql", "protocol": "TCP"}]


# --- autoscaling -------------------------------------------------------------------------------

def test_interface_hpa_on_cpu_and_connections(everything):
    hpa = one(everything, "HorizontalPodAutoscaler", "fleet-channels-fleet-interface")
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["target"]["averageUtilization"] == 70
    assert kinds["Pods"]["pods"]["metric"]["name"] == "channels_fleet_open_connections"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    # The HPA owns the replica count: the Deployment leaves it out.
    assert "replicas" not in deployments(everything)["interface"]["spec"]


def test_worker_hpa_on_saturation_with_the_queue_age_as_burst_trigger(everything):
    hpa = one(everything, "HorizontalPodAutoscaler", "fleet-channels-fleet-worker")
    saturation, age = hpa["spec"]["metrics"]
    assert saturation["external"]["metric"] == {
        "name": "channels_fleet_worker_saturation_ratio",
        "selector": {"matchLabels": {"release": "fleet"}}}
    assert saturation["external"]["target"] == {"type": "Value", "value": "0.7"}
    assert age["external"]["metric"] == {
        "name": "channels_fleet_work_queue_oldest_age_seconds",
        "selector": {"matchLabels": {"release": "fleet", "queue": "fleet.connect"}}}
    assert age["external"]["target"] == {"type": "Value", "value": "1"}
    assert hpa["spec"]["minReplicas"] == 2
    assert not find(everything, "ScaledObject")


def test_worker_scale_down_is_slow_and_stabilised_by_default():
    """The defaults, not a CI file's: workers leave one at a time, after 10 minutes of lower
    saturation, while a burst may double them every 30 s."""
    docs = render(sets=("worker.autoscaling.enabled=true",))
    behavior = one(docs, "HorizontalPodAutoscaler", "fleet-channels-fleet-worker")["spec"][
        "behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1,
                                                  "periodSeconds": 120}]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert {"type": "Percent", "value": 100, "periodSeconds": 30} in behavior["scaleUp"][
        "policies"]


def test_a_worker_removed_by_the_autoscaler_drains_like_a_rollout():
    """Scale-in deletes a worker pod: SIGTERM, then the drain re-homes its sockets. The grace
    period covers the whole drain and no preStop delays it (no Service routes to workers)."""
    docs = render(sets=("worker.autoscaling.enabled=true",))
    spec = deployments(docs)["worker"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = env_of(container)
    drain = int(env["CHANNELS_FLEET_DRAIN_TIMEOUT"]["value"])
    assert spec["terminationGracePeriodSeconds"] >= drain + 5
    assert "lifecycle" not in container
    assert env.get("CHANNELS_FLEET_REHOME", {"value": "on"})["value"] == "on"


def test_keda_scaledobject_queries_prometheus_for_this_release():
    from .test_kubernetes_schemas import validate_crds

    docs = render(KEDA, crds=True)
    so = one(docs, "ScaledObject", "fleet-channels-fleet-worker")
    assert validate_crds([so])[0]["status"] == "valid"
    saturation, age = so["spec"]["triggers"]
    assert (saturation["type"], saturation["name"], saturation["metricType"]) == (
        "prometheus", "saturation", "Value")
    assert saturation["metadata"] == {
        "serverAddress": "https://prometheus.monitoring.svc:9091",
        "query": 'max(channels_fleet:worker_saturation:ratio{namespace="chat",release="fleet"})',
        "threshold": "0.6", "ignoreNullValues": "false"}
    assert age["metadata"]["query"] == (
        'max(channels_fleet:work_queue_oldest_age_seconds:max'
        '{namespace="chat",release="fleet",queue="fleet.connect"})')
    assert (age["metricType"], age["metadata"]["threshold"]) == ("Value", "2")
    assert saturation["authenticationRef"] == age["authenticationRef"] == {
        "name": "prometheus-bearer"}
    # A failed query holds the workers (KEDA refuses Value + fallback).
    assert "fallback" not in so["spec"]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 20)
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"][
        "scaleDown"]["stabilizationWindowSeconds"] == 600
    assert "replicas" not in deployments(docs)["worker"]["spec"]
    assert not find(docs, "HorizontalPodAutoscaler")
    assert not find(docs, "TriggerAuthentication")


def test_keda_mode_without_the_keda_api_keeps_fixed_replicas():
    docs = render(KEDA)
    assert not find(docs, "ScaledObject")
    assert deployments(docs)["worker"]["spec"]["replicas"] == 2


# --- monitoring --------------------------------------------------------------------------------

def test_monitoring_objects_gated_on_their_api():
    without = render(ALL)
    assert not find(without, "ServiceMonitor") and not find(without, "PrometheusRule")
    assert find(without, "ConfigMap", "fleet-channels-fleet-dashboard"), (
        "the dashboard ConfigMap needs no CRD")


def test_servicemonitor_scrapes_the_metrics_services_with_the_release_label(everything):
    (sm,) = find(everything, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"]["channels-fleet/metrics"] == "true"
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics", "redis-metrics"]
    for endpoint in sm["spec"]["endpoints"]:
        assert endpoint["relabelings"] == [{
            "sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_instance"],
            "targetLabel": "release"}]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    scraped = [s for s in find(everything, "Service")
               if s["metadata"]["labels"].get("channels-fleet/metrics") == "true"]
    assert {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped} == {
        "interface", "worker", "web", "redis"}


SELECTOR = re.compile(r"\b[a-z_:]+\{([^{}]*)\}")


def test_prometheusrule_is_the_rules_file_scoped_to_this_release(everything):
    (pr,) = find(everything, "PrometheusRule")
    source = yaml.safe_load((SOURCE_CHART / "files/prometheus-rules.yaml").read_text())
    assert [g["name"] for g in pr["spec"]["groups"]] == [g["name"] for g in source["groups"]]
    rendered = [r for g in pr["spec"]["groups"] for r in g["rules"]]
    originals = [r for g in source["groups"] for r in g["rules"]]
    assert len(rendered) == len(originals)
    for rule, original in zip(rendered, originals, strict=True):
        assert {k: v for k, v in rule.items() if k != "expr"} == {
            k: v for k, v in original.items() if k != "expr"}
        expr = rule["expr"]
        assert 'release!=""' not in expr and 'namespace!=""' not in expr, expr
        for matchers in SELECTOR.findall(expr):
            assert 'namespace="chat"' in matchers, expr
        assert "channels-fleet-worker" not in expr.replace("fleet-channels-fleet-worker", "")
    assert any("alert" in r for r in rendered)


def test_two_releases_get_disjoint_rules():
    a = find(helm("template", "blue", str(SOURCE_CHART), "-n", "prod", "-f", str(ALL),
                  "--api-versions", "monitoring.coreos.com/v1/PrometheusRule").docs(),
             "PrometheusRule")[0]
    b = find(helm("template", "green", str(SOURCE_CHART), "-n", "prod", "-f", str(ALL),
                  "--api-versions", "monitoring.coreos.com/v1/PrometheusRule").docs(),
             "PrometheusRule")[0]
    exprs_a = " ".join(r["expr"] for g in a["spec"]["groups"] for r in g["rules"])
    exprs_b = " ".join(r["expr"] for g in b["spec"]["groups"] for r in g["rules"])
    assert 'release="blue"' in exprs_a and 'release="green"' not in exprs_a
    assert 'release="green"' in exprs_b and "blue-channels-fleet" not in exprs_b


def test_dashboard_configmap_for_the_grafana_sidecar(everything):
    cm = one(everything, "ConfigMap", "fleet-channels-fleet-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (body,) = cm["data"].values()
    source = SOURCE_CHART / "files/grafana-dashboard.json"
    assert json.loads(body) == json.loads(source.read_text())


# --- names, labels, notes ------------------------------------------------------------------------

def test_labels_and_selectors(defaults):
    for dep in find(defaults, "Deployment") + find(defaults, "StatefulSet"):
        sel = dep["spec"]["selector"]["matchLabels"]
        shard = {"channels-fleet.io/shard"} if "redis" in dep["metadata"]["name"] else set()
        assert set(sel) == {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                            "app.kubernetes.io/component", *shard}
        assert sel.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    for obj in defaults:
        labels = obj["metadata"]["labels"]
        assert labels["helm.sh/chart"] == "channels-fleet-0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert len(obj["metadata"]["name"]) <= 63


def test_long_release_names_are_cut_to_63(tmp_path):
    docs = render(sets=("fullnameOverride=" + "x" * 70,))
    for obj in docs:
        assert len(obj["metadata"]["name"]) <= 63
    names = {d["metadata"]["name"] for d in find(docs, "Deployment")}
    assert len(names) == 3, "component suffixes survive the cut"
    for sts in find(docs, "StatefulSet"):
        # Its pods' controller-revision-hash label is <name>-<10 characters>: 63 at most.
        assert len(sts["metadata"]["name"]) <= 52


@pytest.mark.parametrize("values", CI_FILES, ids=lambda p: p.name)
def test_notes_render_with_ready_to_paste_commands(values):
    result = helm("install", "fleet", str(SOURCE_CHART), "-n", "chat", "--dry-run=client", "-f",
                  str(values))
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n chat rollout status deployment/fleet-channels-fleet-interface" in notes
    assert "curl -s 127.0.0.1:9100/readyz" in notes
    assert "re-homing" in notes and "1012 only with" in notes
    assert "{{" not in notes and "<no value>" not in notes


def test_notes_name_the_rendered_redis_and_migrate_objects():
    result = helm("install", "fleet", str(SOURCE_CHART), "-n", "chat", "--dry-run=client")
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "get statefulsets -l app.kubernetes.io/component=redis" in notes
    assert "each shard needs 2 nodes" in notes
    assert re.search(r"job/fleet-channels-fleet-migrate-[0-9a-f]{10} ", notes)
    assert "exec fleet-channels-fleet-redis-shard-0-0 -c valkey" in notes


def test_kind_e2e_values_render_and_match_the_kind_port_mappings():
    """tests/e2e/kind/values.yaml is what make e2e-kind installs (and the podman backend
    renders): only images, NodePorts, replicas, a short drain; its NodePorts are the ones
    kind-config.yaml maps to the host."""
    kind = SOURCE_CHART.parent.parent / "tests" / "e2e" / "kind"
    values = yaml.safe_load((kind / "values.yaml").read_text())
    assert set(values) == {"interfaceImage", "projectImage", "interface", "worker", "web",
                           "config"}, "nothing that hides a broken default"
    docs = render(kind / "values.yaml")
    node_ports = {s["metadata"]["name"]: s["spec"]["ports"][0]["nodePort"]
                  for s in find(docs, "Service") if s["spec"].get("type") == "NodePort"}
    config = yaml.safe_load((kind / "kind-config.yaml").read_text())
    mapped = {m["containerPort"] for m in config["nodes"][0]["extraPortMappings"]}
    assert node_ports == {"fleet-channels-fleet-interface": 30080,
                          "fleet-channels-fleet-web": 30081}
    assert set(node_ports.values()) <= mapped
    images = {c["image"] for d in find(docs, "Deployment")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"localhost/channels-fleet-interface:latest",
                      "localhost/channels-fleet-chat:latest"}
