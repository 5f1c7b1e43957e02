"""GitOps on the local cluster: `helm template | kubectl apply --server-side`, twice.

What Argo CD or a pipeline does, without Helm in the cluster: render the chart, apply it into a
fresh namespace (restricted Pod Security), wait until it serves; render it again with a new image
(the same image under a second tag, scripts/k8s/e2e.sh tags it in every node's containerd) and
apply that. Then: two renders with the same values were byte-identical; every generated password
is the one the first round made (the secrets Job made them once; lookup never ran); the apps rolled
to the new image; the new migrate Job (named by what it runs) ran; the database and Redis are
reachable (sign-in on the web tier, a chat round trip). Also measured: the pods that started
before their Secret existed waited (CreateContainerConfigError, retried by the kubelet) and how
long after the Secret they ran; worker and web waited for the first migrate Job. Prints the
`k8s-gitops:` line; deletes the namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime

import pytest
import yaml

from .. import scenarios
from ..kube_stack import KubeStack
from .conftest import RESULTS, phase
from .release import APP_COMPONENTS, Release, component, sign_in

pytestmark = [
    pytest.mark.skipif(not os.environ.get("E2E_K8S"),
                       reason="needs the local cluster: run make e2e-k8s"),
    pytest.mark.timeout(600),
    pytest.mark.slow,
]

NAMESPACE = os.environ.get("E2E_GITOPS_NAMESPACE", "fleet-gitops")
#: The second tag of the project's images (scripts/k8s/e2e.sh: ctr images tag in every node).
NEW_TAG = os.environ.get("E2E_GITOPS_TAG", "gitops")
# A small release (one Redis master, one pod of each app) beside the values of make e2e-k8s; the
# demo's allowed hosts follow the namespace. PostgreSQL keeps its volume: it keeps the password it
# was initialised with, as in production, so a changed password would lock the apps out.
SMALL = ("redis.cluster.masters=1", "redis.cluster.replicasPerMaster=0",
         "interface.replicaCount=1", "worker.replicaCount=1", "web.replicaCount=1",
         "interface.pdb.enabled=false", "worker.pdb.enabled=false", "web.pdb.enabled=false",
         "config.extraEnv[0].name=DJANGO_ALLOWED_HOSTS",
         f"config.extraEnv[0].value=.{NAMESPACE}.svc.cluster.local\\,localhost")


@pytest.fixture(scope="module")
def gitops() -> Release:
    base = Release.from_env()
    return Release(namespace=NAMESPACE, name=base.name, chart=base.chart, values=base.values,
                   helm_bin=base.helm_bin, kubectl_bin=base.kubectl_bin)


def render(release: Release, *sets: str) -> str:
    """`helm template` as a GitOps tool runs it: no cluster, no hooks run, no test pods."""
    args = [release.helm_bin, "template", release.name, release.chart, "--namespace",
            release.namespace, "--values", release.values, "--skip-tests"]
    for value in (*SMALL, *sets):
        args += ["--set", value]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout


def apply(release: Release, manifest: str) -> None:
    done = subprocess.run([release.kubectl_bin, "--namespace", release.namespace, "apply",
                           "--server-side", "-f", "-"], input=manifest, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"kubectl apply --server-side: {done.stderr.strip()}"


def objects(manifest: str, kind: str) -> list[str]:
    """Names of the objects of one kind in a rendered manifest."""
    return [d["metadata"]["name"] for d in yaml.safe_load_all(manifest)
            if d and d["kind"] == kind]


def job_of(manifest: str, part: str) -> str:
    (name,) = [n for n in objects(manifest, "Job") if f"-{part}-" in n]
    return name


def settle(release: Release, manifest: str, timeout: float = 300) -> None:
    """Until every Job of the manifest completed and every Deployment and StatefulSet rolled."""
    for job in objects(manifest, "Job"):
        release.kubectl("wait", "--for=condition=complete", f"job/{job}",
                        f"--timeout={int(timeout)}s", timeout=timeout + 10)
    for kind in ("StatefulSet", "Deployment"):
        for name in objects(manifest, kind):
            release.kubectl("rollout", "status", f"{kind.lower()}/{name}",
                            f"--timeout={int(timeout)}s", timeout=timeout + 10)


def secret_data(release: Release) -> dict[str, dict[str, str]]:
    """The data of the Secrets the secrets Job made (labelled so, no Helm ownership)."""
    items = json.loads(release.kubectl(
        "get", "secrets", "-l", "app.kubernetes.io/managed-by=channels-fleet-secrets",
        "-o", "json"))["items"]
    return {s["metadata"]["name"]: s.get("data", {}) for s in items}


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def waited_for_secrets(release: Release) -> tuple[int, float]:
    """Pods that found a Secret missing (the kubelet's CreateContainerConfigError), and the
    longest time from that Secret's creation to the pod's first container start."""
    events = json.loads(release.kubectl("get", "events", "-o", "json"))["items"]
    missing = {e["involvedObject"]["name"] for e in events
               if e.get("reason") == "Failed" and "secret" in e.get("message", "")
               and "not found" in e.get("message", "")}
    made = [stamp(s["metadata"]["creationTimestamp"]) for s in json.loads(release.kubectl(
        "get", "secrets", "-l", "app.kubernetes.io/managed-by=channels-fleet-secrets",
        "-o", "json"))["items"]]
    latest = max(made, default=0.0)
    lag = 0.0
    for pod in json.loads(release.kubectl("get", "pods", "-o", "json"))["items"]:
        if pod["metadata"]["name"] not in missing:
            continue
        statuses = [*pod["status"].get("initContainerStatuses", []),
                    *pod["status"].get("containerStatuses", [])]
        starts = [stamp(s["state"].get("running", s["state"].get("terminated", {}))["startedAt"])
                  for s in statuses if s["state"].get("running") or s["state"].get("terminated")]
        if starts:
            lag = max(lag, min(starts) - latest)
    return len(missing), round(lag, 1)


def waited_for_migrations(release: Release, job: str) -> str:
    """Whether worker and web left their wait-for-migrations init container only after the
    migrate Job's container had started: "n/n" pods that did."""
    migrate = json.loads(release.kubectl("get", "pods", "-l", f"job-name={job}", "-o",
                                         "json"))["items"]
    started = min(stamp(c["state"]["terminated"]["startedAt"])
                  for p in migrate for c in p["status"]["containerStatuses"])
    pods = [p for p in release.app_pods() if component(p) in ("worker", "web")]
    waited = [p for p in pods for c in p["status"].get("initContainerStatuses", [])
              if c["name"] == "wait-for-migrations"
              and stamp(c["state"]["terminated"]["finishedAt"]) >= started]
    return f"{len(waited)}/{len(pods)}"


async def chat_works(release: Release) -> None:
    """Sign in on the web tier (the database) and a chat round trip (Redis, interface, worker)."""
    web = next(p["metadata"]["name"] for p in release.app_pods() if component(p) == "web")
    release.exec(web, "python3", "manage.py", "demo_users")
    web_url = f"http://{release.service_host('web')}:{release.service_port('web')}"
    session = sign_in(web_url, "alice")
    stack = KubeStack(
        base_url=f"http://{release.service_host('interface')}:"
                 f"{release.service_port('interface')}",
        namespace=release.namespace, release=release.name, kubectl=release.kubectl_bin,
        chat=scenarios.ChatProtocol(headers=(("Cookie", f"sessionid={session}"),)))
    await scenarios.scenario_chat_round_trip(stack)


def app_images(release: Release) -> dict[str, set[str]]:
    return {name: {c["image"] for p in release.app_pods() if component(p) == name
                   for c in p["spec"]["containers"]} for name in APP_COMPONENTS}


async def test_gitops__template_apply_twice_keeps_passwords_rolls_apps(gitops: Release) -> None:
    release = gitops
    fields: dict = {}
    release.kubectl("create", "namespace", release.namespace)
    try:
        release.kubectl("label", "namespace", release.namespace,
                        "pod-security.kubernetes.io/enforce=restricted")
        with phase("gitops"):
            first = render(release)
            fields["renders_identical"] = "yes" if render(release) == first else "NO"
            t0 = time.monotonic()
            apply(release, first)
            settle(release, first)
            fields["first_ready_s"] = round(time.monotonic() - t0, 1)
            fields["waited_for_secret"], fields["secret_to_start_s"] = waited_for_secrets(release)
            fields["waited_for_migrate"] = waited_for_migrations(release,
                                                                 job_of(first, "migrate"))
            passwords = secret_data(release)
            await chat_works(release)
            old_uids = {p["metadata"]["uid"] for p in release.app_pods()}

            second = render(release, f"interfaceImage.tag={NEW_TAG}",
                            f"projectImage.tag={NEW_TAG}")
            t0 = time.monotonic()
            apply(release, second)
            settle(release, second)
            fields["second_ready_s"] = round(time.monotonic() - t0, 1)
            kept = secret_data(release)
            fields["passwords_kept"] = (f"{sum(kept.get(n) == d for n, d in passwords.items())}"
                                        f"/{len(passwords)}")
            images = app_images(release)
            rolled = [n for n, found in images.items()
                      if found and all(i.endswith(f":{NEW_TAG}") for i in found)]
            fields["apps_rolled"] = f"{len(rolled)}/{len(APP_COMPONENTS)}"
            old_job, new_job = job_of(first, "migrate"), job_of(second, "migrate")
            fields["migrate_job"] = f"{old_job.rsplit('-', 1)[1]}->{new_job.rsplit('-', 1)[1]}"
            new_uids = {p["metadata"]["uid"] for p in release.app_pods()}
            await chat_works(release)
            fields["chat"] = "ok"
    finally:
        line = " ".join(f"{k}={v}" for k, v in fields.items())
        RESULTS["k8s_gitops"] = line
        print(f"\nk8s-gitops: {line}")
        release.kubectl("delete", "namespace", release.namespace, "--wait=true", timeout=300,
                        check=False)
    assert fields["renders_identical"] == "yes", "two renders with the same values differ"
    # The Redis and PostgreSQL passwords and the interfaces' resume key.
    assert len(passwords) == 3 and kept == passwords, (
        f"the passwords changed: {sorted(passwords)} -> {sorted(kept)}")
    assert rolled == list(APP_COMPONENTS), f"apps not on the new image: {images}"
    done, pods = fields["waited_for_migrate"].split("/")
    assert done == pods != "0", f"worker/web started before the migrations: {done}/{pods}"
    assert old_job != new_job, "a new image did not make a new migrate Job"
    assert not new_uids & old_uids, "app pods the new image did not replace"
    assert fields["secret_to_start_s"] <= 30, (
        f"pods ran {fields['secret_to_start_s']} s after their Secret was made")
