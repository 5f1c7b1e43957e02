"""The built-in Redis Cluster's day 2: Guaranteed pods with room for a resync's fork."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from .helm import NAMESPACE, RELEASE, SOURCE_CHART, component, find, helm, one, render, template

UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "kb": 1000, "mb": 10**6, "gb": 10**9}


def qos_class(pod: dict) -> str:
    """The class Kubernetes gives the pod (its rules: every container, init ones too)."""
    everyone = [*pod.get("initContainers", []), *pod["containers"]]
    guaranteed, any_set = True, False
    for c in everyone:
        limits = c.get("resources", {}).get("limits", {})
        requests = {**limits, **c.get("resources", {}).get("requests", {})}
        any_set = any_set or bool(limits) or bool(requests)
        for resource in ("cpu", "memory"):
            if resource not in limits or str(requests[resource]) != str(limits[resource]):
                guaranteed = False
    return "Guaranteed" if guaranteed else "Burstable" if any_set else "BestEffort"


def size(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", text).groups()
    return int(number) * UNITS[unit]


@pytest.mark.parametrize("sets", [(), ("redis.metrics.enabled=true",)],
                         ids=["defaults", "with the exporter"])
def test_redis_pods_are_guaranteed(sets):
    shards = component(render(sets=sets), "StatefulSet", "redis")
    assert len(shards) == 3
    for sts in shards:
        assert qos_class(sts["spec"]["template"]["spec"]) == "Guaranteed"


def test_qos_rules_as_kubernetes_applies_them():
    both = {"cpu": "1", "memory": "1Mi"}
    assert qos_class({"containers": [{"resources": {"limits": both}}]}) == "Guaranteed"
    assert qos_class({"containers": [{"resources": {"requests": both, "limits": {
        "memory": "1Mi"}}}]}) == "Burstable"
    assert qos_class({"containers": [{"resources": {"limits": both}}],
                      "initContainers": [{}]}) == "Burstable"
    assert qos_class({"containers": [{}]}) == "BestEffort"


def test_memory_limit_leaves_a_fork_and_a_resync_buffer_over_maxmemory():
    (sts, *_) = component(render(), "StatefulSet", "redis")
    (valkey,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "valkey"]
    env = {e["name"]: e.get("value") for e in valkey["env"]}
    maxmemory = size(env["MAXMEMORY"])
    # Copy-on-write during the fork can double the data; the replica's buffer (64mb) on top.
    assert size(valkey["resources"]["limits"]["memory"]) >= 2 * maxmemory + 64 * 2**20



# --- a user per role (redis.acl.enabled) -------------------------------------------------------

ACL_ON = ("redis.acl.enabled=true",)
ROLES = ("interface", "worker", "web", "exporter")


def docs_acl_lines() -> list[str]:
    """docs/redis-acl.md's ACL SETUSER lines (the block its tests read), as ACL file lines."""
    text = (SOURCE_CHART.parents[1] / "docs/redis-acl.md").read_text()
    block = text.split("<!-- acl-lines:", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    return [line.replace("ACL SETUSER ", "user ", 1) for line in block.splitlines() if line]


def users_acl(docs) -> list[str]:
    return one(docs, "ConfigMap", "fleet-channels-fleet-redis")["data"]["users.acl"].splitlines()


def test_role_users_are_the_documented_lines():
    assert users_acl(render(sets=ACL_ON)) == docs_acl_lines()


def test_role_users_follow_the_key_prefixes():
    docs = render(sets=(*ACL_ON, "config.keyPrefix=shop", "redis.acl.layerPrefix=shop-asgi"))
    worker = next(line for line in users_acl(docs) if line.startswith("user fleet-worker "))
    # docs/redis-acl.md, "Another key prefix".
    assert ("~shop:q:{fleet.*} ~shop:hb:{hb}:* ~shop:dead:{hb}:* ~shop:workers:{hb} "
            "~shop:session:* ~shop-asgi:* "
            in worker)
    assert "fleet:" not in worker.replace("user fleet-worker ", "").replace("{fleet.", "")


def test_each_pod_kind_connects_as_its_own_user():
    docs = render(sets=ACL_ON)
    for d in find(docs, "Deployment"):
        role = d["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = d["spec"]["template"]["spec"]
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            env = {e["name"]: e for e in c.get("env", [])}
            if "CHANNELS_FLEET_REDIS_URL" not in env:
                continue
            assert env["CHANNELS_FLEET_REDIS_USERNAME"]["value"] == f"fleet-{role}"
            assert env["CHANNELS_FLEET_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": "fleet-channels-fleet-redis-users", "key": f"{role}-password"}
            assert env["CHANNELS_FLEET_REDIS_URL"]["value"] == (
                "redis://$(CHANNELS_FLEET_REDIS_USERNAME):$(CHANNELS_FLEET_REDIS_PASSWORD)"
                "@fleet-channels-fleet-redis:6379")
    # The default user's password stays with the Redis pods (the secrets Job names the key it
    # makes, and holds no value).
    jobs = [j for j in find(docs, "Job") if "-secrets-" not in j["metadata"]["name"]]
    for d in find(docs, "Deployment") + jobs:
        assert "redis-password" not in str(d), d["metadata"]["name"]
    assert {(i["secret"], i["key"]) for i in ensure_items(docs)
            if i["key"] not in ("redis-password", "postgres-password", "resume-key")} == {
        ("fleet-channels-fleet-redis-users", f"{role}-password") for role in ROLES}


def test_redis_nodes_get_the_users_and_their_passwords():
    docs = render(sets=(*ACL_ON, "redis.acl.existingSecret=my-users"))
    assert not find(docs, "Secret", "fleet-channels-fleet-redis-users")
    (sts, *_) = component(docs, "StatefulSet", "redis")
    (valkey,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "valkey"]
    env = {e["name"]: e for e in valkey["env"]}
    assert env["ACL_FILE"]["value"] == "/scripts/users.acl"
    for role in ROLES:
        assert env[f"ACL_{role.upper()}_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "my-users", "key": f"{role}-password"}


def test_no_role_users_by_default():
    docs = render()
    assert "users.acl" not in one(docs, "ConfigMap", "fleet-channels-fleet-redis")["data"]
    assert not find(docs, "Secret", "fleet-channels-fleet-redis-users")


# --- TLS only (redis.tls.enabled) --------------------------------------------------------------

TLS_ON = ("redis.tls.enabled=true",)


def test_tls_nodes_and_every_client_of_the_cluster():
    docs = render(sets=(*TLS_ON, *ACL_ON, "redis.metrics.enabled=true"))
    (sts, *_) = component(docs, "StatefulSet", "redis")
    pod = sts["spec"]["template"]["spec"]
    valkey, exporter = pod["containers"]
    assert {e["name"]: e.get("value") for e in valkey["env"]}["TLS_DIR"] == "/tls"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "fleet-channels-fleet-redis-tls"
    exporter_env = {e["name"]: e.get("value") for e in exporter["env"]}
    assert exporter_env["REDIS_ADDR"] == "rediss://127.0.0.1:6379"
    assert exporter_env["REDIS_EXPORTER_TLS_CA_CERT_FILE"] == "/tls/ca.crt"
    for d in find(docs, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        ca = {v["name"]: v for v in spec["volumes"]}["redis-ca"]["secret"]
        # The apps get the CA, never the nodes' key.
        assert ca == {"secretName": "fleet-channels-fleet-redis-tls",
                      "items": [{"key": "ca.crt", "path": "ca.crt"}]}
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if "CHANNELS_FLEET_REDIS_URL" not in env:
                continue
            assert env["CHANNELS_FLEET_REDIS_URL"].startswith("rediss://"), c["name"]
            assert env["CHANNELS_FLEET_REDIS_URL"].endswith(
                ":6379?ssl_ca_certs=/etc/channels-fleet/redis-ca/ca.crt"), c["name"]
            assert env["CHANNELS_FLEET_REDIS_CA_FILE"] == "/etc/channels-fleet/redis-ca/ca.crt"
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            assert mounts["redis-ca"] == "/etc/channels-fleet/redis-ca", c["name"]


def test_tls_with_the_users_own_secret_and_one_password():
    docs = render(sets=(*TLS_ON, "redis.tls.existingSecret=redis-cert"))
    (sts, *_) = component(docs, "StatefulSet", "redis")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "redis-cert"
    (interface,) = component(docs, "Deployment", "interface")
    (c,) = [c for c in interface["spec"]["template"]["spec"]["containers"]
            if c["name"] == "interface"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CHANNELS_FLEET_REDIS_URL"].startswith("rediss://:$(CHANNELS_FLEET_REDIS_PASSWORD)@")
    assert "tls" not in {i["kind"] for i in ensure_items(docs)}  # the user's certificate


def test_tls_certificate_made_once_in_the_cluster():
    """No certificate of the user's: the secrets Job's `tls` kind makes the CA and the nodes'."""
    docs = render(sets=TLS_ON)
    (item,) = [i for i in ensure_items(docs) if i["kind"] == "tls"]
    assert item["secret"] == "fleet-channels-fleet-redis-tls" and item["key"] == "tls.crt"


def ensure_items(docs) -> list[dict]:
    """What the secrets Job makes: its `secrets ensure` items."""
    (job,) = [j for j in find(docs, "Job") if "-secrets-" in j["metadata"]["name"]]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return [json.loads(a) for a in c["args"] if a.startswith("{")]


def template_item(define: str, sets: tuple[str, ...], tmp: Path) -> str:
    """What a named template of the chart renders (a copy of the chart with one more file)."""
    chart = tmp / "channels-fleet"
    shutil.copytree(SOURCE_CHART, chart)
    (chart / "templates/zz-probe.yaml").write_text(
        f'probe: {{{{ include "{define}" . | toJson }}}}\n')
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "-s",
            "templates/zz-probe.yaml"]
    for s in sets:
        args += ["--set", s]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["probe"]


def test_the_generated_certificate_covers_the_service_and_every_pod(tmp_path):
    item = yaml.safe_load(template_item("channels-fleet.redis.tlsSecretItem", TLS_ON, tmp_path))
    assert item == {"secret": "fleet-channels-fleet-redis-tls", "key": "tls.crt", "kind": "tls",
                    "options": {"dnsNames": [
                        "fleet-channels-fleet-redis", "fleet-channels-fleet-redis.chat.svc",
                        "fleet-channels-fleet-redis.chat.svc.cluster.local",
                        "*.fleet-channels-fleet-redis-headless.chat.svc",
                        "*.fleet-channels-fleet-redis-headless.chat.svc.cluster.local"]}}


def test_no_tls_by_default():
    text = template().stdout
    assert "rediss://" not in text and "CHANNELS_FLEET_REDIS_CA_FILE" not in text
