"""GitOps: the render is a function of the values (Argo CD, `helm template | kubectl apply`).

No secret value is made at render time: two renders with the same values are byte-identical, and
the passwords the values do not name are made once in the cluster by the secrets Job
(`channels-fleet secrets ensure`, src/channels_fleet/kube), with its own least-privilege RBAC, as
Helm hooks that Helm runs first and `kubectl apply` applies as plain objects.
"""

from __future__ import annotations

import json
import re

import pytest

from .helm import CI_VALUES, SOURCE_CHART, component, find, helm, one, render

RELEASE = ("template", "fleet", str(SOURCE_CHART), "--namespace", "chat")
GENERATED = {"fleet-channels-fleet-redis-auth": "redis-password",
             "fleet-channels-fleet-postgresql-auth": "postgres-password",
             "fleet-channels-fleet-resume-key": "resume-key"}
HOOK = {"helm.sh/hook": "pre-install,pre-upgrade",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded"}


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_two_renders_with_the_same_values_are_identical(values) -> None:
    args = [*RELEASE, *(["-f", str(values)] if values else [])]
    first, second = helm(*args), helm(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout


# The one lookup left decides no value: it refuses a shard layout change at `helm upgrade`
# (under GitOps, where it sees nothing, node.sh refuses at the pod's start instead).
ASKS_ONLY_TO_REFUSE = {"_redis-layout.tpl"}


def test_no_template_makes_up_a_value_or_asks_the_cluster() -> None:
    """lookup answers nothing under helm template / Argo CD; rand* and gen* differ per render."""
    made_up = re.compile(r"\b(lookup|rand\w+|uuidv4|gen(CA|PrivateKey|SelfSignedCert|SignedCert)"
                         r"\w*|derivePassword)\b")
    found = {p.name: made_up.findall(p.read_text())
             for p in (SOURCE_CHART / "templates").rglob("*") if p.is_file()}
    assert not {k: v for k, v in found.items() if v and k not in ASKS_ONLY_TO_REFUSE}
    assert {m[0] for name in ASKS_ONLY_TO_REFUSE for m in found[name]} <= {"lookup"}


def secrets_job(docs):
    (job,) = component(docs, "Job", "secrets")
    return job


def ensure_items(job) -> list[dict]:
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"][:2] == ["secrets", "ensure"]
    return [json.loads(a) for a in c["args"] if a.startswith("{")]


def test_the_secrets_job_makes_each_password_the_values_do_not_name() -> None:
    docs = render()
    job = secrets_job(docs)
    assert {i["secret"]: i["key"] for i in ensure_items(job)} == GENERATED
    assert {i["kind"] for i in ensure_items(job)} == {"password"}
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "ghcr.io/channels-fleet/channels-fleet-interface:0.1.0"
    # Created Secrets carry no Helm ownership: helm uninstall leaves them.
    labels = [a for a in c["args"] if a.startswith("--label=")]
    assert "--label=app.kubernetes.io/managed-by=channels-fleet-secrets" in labels
    assert not [a for a in labels if "Helm" in a]
    assert job["metadata"]["annotations"] == {**HOOK, "helm.sh/hook-weight": "0"}
    assert re.fullmatch(r"fleet-channels-fleet-secrets-[0-9a-f]{10}", job["metadata"]["name"])
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "fleet-channels-fleet-secrets"
    assert pod["automountServiceAccountToken"] is True


def test_the_secrets_job_rbac_comes_first_and_reaches_only_its_secrets() -> None:
    docs = render()
    name = "fleet-channels-fleet-secrets"
    weights = {kind: int(one(docs, kind, name)["metadata"]["annotations"]["helm.sh/hook-weight"])
               for kind in ("ServiceAccount", "Role", "RoleBinding")}
    assert weights["ServiceAccount"] < weights["Role"] < weights["RoleBinding"] < 0
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        annotations = one(docs, kind, name)["metadata"]["annotations"]
        assert {k: v for k, v in annotations.items() if k != "helm.sh/hook-weight"} == HOOK
    assert one(docs, "Role", name)["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": list(GENERATED),
         "verbs": ["get", "patch"]}]
    binding = one(docs, "RoleBinding", name)
    assert binding["roleRef"]["name"] == name
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "chat"}]


def test_a_secret_the_user_names_is_not_generated() -> None:
    docs = render(sets=("redis.auth.existingSecret=chat-redis",))
    assert {i["secret"] for i in ensure_items(secrets_job(docs))} == {
        "fleet-channels-fleet-postgresql-auth", "fleet-channels-fleet-resume-key"}
    docs = render(sets=("redis.auth.existingSecret=chat-redis",
                        "database.postgresql.auth.existingSecret=chat-pg",
                        "resume.existingSecret=chat-resume"))
    assert not component(docs, "Job", "secrets")
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        assert not find(docs, kind, "fleet-channels-fleet-secrets"), kind


def test_the_secrets_job_is_named_by_what_it_runs() -> None:
    name = secrets_job(render())["metadata"]["name"]
    assert secrets_job(render(sets=("web.replicaCount=3",)))["metadata"]["name"] == name
    # A new image is a new Job: under kubectl apply a Job's pod template cannot change.
    renamed = secrets_job(render(sets=("interfaceImage.tag=0.2.0",)))["metadata"]["name"]
    assert renamed != name


def test_notes_say_the_generated_secrets_outlive_an_uninstall() -> None:
    result = helm("install", "fleet", str(SOURCE_CHART), "-n", "chat", "--dry-run=client")
    notes = result.stdout.split("NOTES:", 1)[1]
    assert ("secret/fleet-channels-fleet-redis-auth secret/fleet-channels-fleet-postgresql-auth"
            in notes)
    assert "`helm uninstall` keeps them" in notes
    assert ("delete secret -l app.kubernetes.io/managed-by=channels-fleet-secrets,"
            "app.kubernetes.io/instance=fleet") in notes
