"""A Redis you run (redis.external): per-role users from Secret keys, a private CA mounted into
every pod that talks to Redis, extra volumes on every pod kind, port ranges in the Redis egress,
and the managed-service snippets of the chart README rendering as written."""

import re
import subprocess

import pytest
import yaml
from kubernetes_validate import utils as kv

from .helm import ROOT, SOURCE_CHART, find, one, render, template

CI = SOURCE_CHART / "ci"
MANAGED = CI / "35-managed-redis-values.yaml"
README = SOURCE_CHART / "README.md"
CA_FILE = "/etc/channels-fleet/redis-ca/ca.crt"
REDIS_ENV = ("CHANNELS_FLEET_REDIS_USERNAME", "CHANNELS_FLEET_REDIS_PASSWORD",
             "CHANNELS_FLEET_REDIS_CA_FILE")
EXTERNAL = "redis.external.url=rediss://cache.example:6379"


def pods(docs):
    """{name: pod spec} of every workload: Deployments, StatefulSets, the test Pod, and the
    migrate Job as "migrate" (whatever names it)."""
    found = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            found[d["metadata"]["name"]] = d["spec"]["template"]["spec"]
        elif d["kind"] == "Job" and "-migrate-" in d["metadata"]["name"]:
            found["migrate"] = d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            found[d["metadata"]["name"]] = d["spec"]
    return found


def containers(pod):
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def redis_env(container):
    """The external-Redis variables of a container: name -> Secret key or value."""
    out = {}
    for e in container.get("env", []):
        if e["name"] in REDIS_ENV:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            out[e["name"]] = (ref["name"], ref["key"]) if ref else e["value"]
    return out


def mounts(container):
    return {m["name"]: m for m in container.get("volumeMounts", [])}


@pytest.fixture(scope="module")
def managed():
    return render(MANAGED)


# --- credentials and CA ------------------------------------------------------------------------

@pytest.mark.parametrize("role,talks", [
    ("interface", ("wait-for-redis", "interface")),
    ("worker", ("wait-for-redis", "worker")),
    ("web", ("web",)),
])
def test_each_role_connects_as_its_own_user_and_verifies_the_private_ca(managed, role, talks):
    pod = pods(managed)[f"fleet-channels-fleet-{role}"]
    (ca,) = [v for v in pod["volumes"] if v["name"] == "redis-ca"]
    assert ca["secret"] == {"secretName": "fleet-redis-ca", "defaultMode": 0o444,
                            "items": [{"key": "ca.pem", "path": "ca.crt"}]}
    for name in talks:
        c = containers(pod)[name]
        assert redis_env(c) == {
            "CHANNELS_FLEET_REDIS_USERNAME": ("fleet-redis-users", f"{role}-username"),
            "CHANNELS_FLEET_REDIS_PASSWORD": ("fleet-redis-users", f"{role}-password"),
            "CHANNELS_FLEET_REDIS_CA_FILE": CA_FILE}, name
        assert mounts(c)["redis-ca"] == {"name": "redis-ca", "readOnly": True,
                                         "mountPath": "/etc/channels-fleet/redis-ca"}, name


def test_pods_that_never_talk_to_redis_get_no_credentials_or_ca(managed):
    """The migrate Job, the wait-for-migrations init containers and the helm test pod."""
    for name, pod in pods(managed).items():
        for cname, c in containers(pod).items():
            if cname in ("migrate", "wait-for-database", "wait-for-migrations", "test"):
                assert not redis_env(c), f"{name}/{cname}"
                assert "redis-ca" not in mounts(c), f"{name}/{cname}"
    assert "redis-ca" not in {v["name"] for v in pods(managed)["fleet-channels-fleet-test"].get(
        "volumes", [])}


def test_the_url_stays_in_its_secret_without_user_info(managed):
    env = {e["name"]: e for e in containers(pods(managed)["fleet-channels-fleet-worker"])[
        "worker"]["env"]}
    assert env["CHANNELS_FLEET_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"


def test_one_user_for_every_role_and_a_key_left_empty_is_not_used():
    docs = render(sets=(EXTERNAL, "redis.external.auth.existingSecret=redis-creds",
                        "redis.external.auth.usernameKey=user",
                        "redis.external.auth.roles.web.passwordKey=web-password"))
    for role in ("interface", "worker", "web"):
        env = redis_env(containers(pods(docs)[f"fleet-channels-fleet-{role}"])[role])
        password = "web-password" if role == "web" else "password"
        assert env == {"CHANNELS_FLEET_REDIS_USERNAME": ("redis-creds", "user"),
                       "CHANNELS_FLEET_REDIS_PASSWORD": ("redis-creds", password)}, role
    docs = render(sets=(EXTERNAL, "redis.external.auth.existingSecret=redis-creds"))
    env = redis_env(containers(pods(docs)["fleet-channels-fleet-worker"])["worker"])
    assert env == {"CHANNELS_FLEET_REDIS_PASSWORD": ("redis-creds", "password")}


def test_ca_from_a_configmap():
    docs = render(sets=(EXTERNAL, "redis.external.tls.enabled=true",
                        "redis.external.tls.caConfigMap.name=memorystore-ca"))
    pod = pods(docs)["fleet-channels-fleet-interface"]
    (ca,) = [v for v in pod["volumes"] if v["name"] == "redis-ca"]
    assert ca["configMap"] == {"name": "memorystore-ca", "defaultMode": 0o444,
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert redis_env(containers(pod)["interface"]) == {"CHANNELS_FLEET_REDIS_CA_FILE": CA_FILE}


def test_tls_without_a_ca_trusts_the_images_system_cas():
    docs = render(sets=(EXTERNAL, "redis.external.tls.enabled=true"))
    for name, pod in pods(docs).items():
        assert "redis-ca" not in {v["name"] for v in pod.get("volumes", [])}, name
        for c in containers(pod).values():
            assert not redis_env(c), name


def test_built_in_cluster_gets_none_of_it():
    """With the built-in cluster a pod gets at most that cluster's own password (from the Secret
    the secrets Job makes): no user, no CA, nothing of redis.external."""
    docs = render()
    builtin = {"CHANNELS_FLEET_REDIS_PASSWORD":
               ("fleet-channels-fleet-redis-auth", "redis-password")}
    for name, pod in pods(docs).items():
        for c in containers(pod).values():
            assert redis_env(c) in ({}, builtin), name


# --- extra volumes on every pod kind -----------------------------------------------------------

KINDS = {  # values path -> (pod, containers that mount the pod kind's extraVolumeMounts)
    "interface": ("fleet-channels-fleet-interface", {"wait-for-redis", "interface"}),
    "worker": ("fleet-channels-fleet-worker", {"wait-for-redis", "wait-for-migrations", "worker"}),
    "web": ("fleet-channels-fleet-web", {"wait-for-migrations", "web"}),
    "database.migrate": ("migrate", {"wait-for-database", "migrate"}),
    "database.postgresql": ("fleet-channels-fleet-postgresql", {"postgresql"}),
    "redis": ("fleet-channels-fleet-redis-shard-0", {"valkey"}),
    "tests": ("fleet-channels-fleet-test", {"test"}),
}


def test_extra_volumes_on_every_pod_kind(tmp_path):
    values = {}
    for path in KINDS:
        node = values
        for part in path.split("."):
            node = node.setdefault(part, {})
        node["extraVolumes"] = [{"name": "extra", "secret": {"secretName": "extra"}}]
        node["extraVolumeMounts"] = [{"name": "extra", "mountPath": "/extra", "readOnly": True}]
    file = tmp_path / "extra.yaml"
    file.write_text(yaml.safe_dump(values))
    found = pods(render(file))
    for path, (pod_name, mounting) in KINDS.items():
        pod = found[pod_name]
        assert {"name": "extra", "secret": {"secretName": "extra"}} in pod["volumes"], path
        for cname, c in containers(pod).items():
            assert ("extra" in mounts(c)) == (cname in mounting), f"{path}: {cname}"


# --- NetworkPolicy: a managed cluster's port range ---------------------------------------------

def test_redis_egress_allows_a_port_range(managed):
    np = one(managed, "NetworkPolicy", "fleet-channels-fleet")
    (rule,) = [r for r in np["spec"]["egress"] if r["ports"][0]["port"] == 6379]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"},
                             {"port": 11000, "endPort": 13047, "protocol": "TCP"}]
    assert rule["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert not find(managed, "StatefulSet")


# --- refusals ----------------------------------------------------------------------------------

REFUSALS = {  # values YAML -> text the one-line refusal must contain
    "TLS settings on the built-in cluster": (
        "redis:\n  external:\n    tls:\n      enabled: true\n",
        "redis.external.auth and redis.external.tls are for a Redis you run; set "
        "redis.external.url or redis.external.existingSecret"),
    "users on the built-in cluster": (
        "redis:\n  external:\n    auth:\n      existingSecret: creds\n",
        "redis.external.auth and redis.external.tls are for a Redis you run"),
    "a role's key without the Secret": (
        "redis:\n  external:\n    url: rediss://r:6379\n    auth:\n      roles:\n"
        "        worker:\n          usernameKey: worker-user\n",
        "redis.external.auth: set redis.external.auth.existingSecret, the Secret holding the "
        "keys redis.external.auth.roles.worker.usernameKey names"),
    "a Secret no key of which is read": (
        "redis:\n  external:\n    url: rediss://r:6379\n    auth:\n      existingSecret: creds\n"
        "      passwordKey: \"\"\n",
        "the interface pods read no key of redis.external.auth.existingSecret (creds)"),
    "two CAs": (
        "redis:\n  external:\n    url: rediss://r:6379\n    tls:\n      enabled: true\n"
        "      caSecret: {name: a}\n      caConfigMap: {name: b}\n",
        "set redis.external.tls.caSecret.name or redis.external.tls.caConfigMap.name, not both"),
    "a CA without TLS": (
        "redis:\n  external:\n    url: rediss://r:6379\n    tls:\n      caSecret: {name: a}\n",
        "a CA is only used over TLS; set redis.external.tls.enabled=true"),
    "TLS with a plain URL": (
        "redis:\n  external:\n    url: rediss://a:6379,redis://b:6379\n    tls:\n"
        "      enabled: true\n",
        "redis.external.url: URL 2 of 2 does not start with rediss:// while "
        "redis.external.tls.enabled=true"),
    "a port range upside down": (
        "networkPolicy:\n  redisEgress:\n    ports: [{port: 13047, endPort: 11000}]\n",
        "networkPolicy.redisEgress.ports: set endPort (11000) >= port (13047)"),
}

SCHEMA_REFUSALS = {
    "a range without its end": ("networkPolicy:\n  redisEgress:\n    ports: [{port: 11000}]\n",
                                "at '/networkPolicy/redisEgress/ports/0'"),
    "a mount without a path": ("worker:\n  extraVolumeMounts: [{name: x}]\n",
                               "at '/worker/extraVolumeMounts/0'"),
    "an empty CA key": ("redis:\n  external:\n    tls:\n      caSecret: {key: \"\"}\n",
                        "at '/redis/external/tls/caSecret/key'"),
    "a typo under tls": ("redis:\n  external:\n    tls:\n      ca: x\n",
                         "additional properties 'ca' not allowed"),
}


def _refused(tmp_path, body):
    file = tmp_path / "bad.yaml"
    file.write_text(body)
    result = template(file)
    assert result.returncode != 0, f"accepted:\n{body}"
    return result.stderr


@pytest.mark.parametrize("case", REFUSALS, ids=str)
def test_bad_combinations_refused_naming_the_value(case, tmp_path):
    body, expected = REFUSALS[case]
    err = _refused(tmp_path, body)
    assert "VALUES VALIDATION" in err and expected in err, err
    print(f"refused {case}: {[line for line in err.splitlines() if expected[:20] in line][0]}")


@pytest.mark.parametrize("case", SCHEMA_REFUSALS, ids=str)
def test_schema_refuses(case, tmp_path):
    body, expected = SCHEMA_REFUSALS[case]
    err = _refused(tmp_path, body)
    assert "values don't meet the specifications of the schema" in err and expected in err, err


# --- the README's managed-service snippets render as written ----------------------------------

SNIPPET = re.compile(r"<!-- values: ([\w-]+) -->\n```yaml\n(.*?)```", re.S)


def readme_snippets():
    return dict(SNIPPET.findall(README.read_text()))


def test_readme_has_a_snippet_per_managed_service():
    assert set(readme_snippets()) == {"elasticache", "memorystore", "azure-managed-redis"}


@pytest.mark.parametrize("name", sorted(readme_snippets()))
def test_readme_snippet_renders_valid_manifests(name, tmp_path):
    file = tmp_path / f"{name}.yaml"
    file.write_text(readme_snippets()[name])
    docs = render(file)
    assert not find(docs, "StatefulSet", "fleet-channels-fleet-redis-shard-0")
    for doc in docs:
        kv.validate(doc, "1.35.0", strict=True)
    worker = containers(pods(docs)["fleet-channels-fleet-worker"])["worker"]
    print(f"{name}: {sorted(redis_env(worker))}")


def test_elasticache_access_strings_are_the_acl_doc_lines_without_reset_and_password():
    """The README's `access` shell function, run as written on docs/redis-acl.md."""
    (function,) = [line for line in README.read_text().splitlines() if line.startswith("access()")]
    acl = (ROOT / "docs" / "redis-acl.md").read_text()
    for role in ("interface", "worker", "web", "exporter"):
        out = subprocess.run(["bash", "-c", f"{function}\naccess {role}"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        (line,) = [x for x in acl.splitlines() if x.startswith(f"ACL SETUSER fleet-{role} ")]
        assert out.startswith("on ~") or out.startswith("on %R~"), out
        assert line.endswith(out[len("on "):]), role
        assert ">" not in out and " reset " not in f" {out} ", out
