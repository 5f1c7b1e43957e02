"""The interfaces' resume key (CHANNELS_FLEET_RESUME_KEY, resumable sessions): made once by the
secrets Job as `<full>-resume-key` unless the values name a Secret, read by the interface
container only, and gone with resume.enabled=false."""

from __future__ import annotations

import json

import pytest

from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.kube.kinds import KINDS, Item

from .helm import CI_VALUES, SOURCE_CHART, component, helm, one, render

KEY_ENV = "CHANNELS_FLEET_RESUME_KEY"
GENERATED = {"name": "fleet-channels-fleet-resume-key", "key": "resume-key"}


def pod_containers(docs):
    """(workload name, container) of every container of every pod the chart runs."""
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            pod = d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            pod = d["spec"]
        else:
            continue
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            yield d["metadata"]["name"], c


def key_refs(docs) -> dict[str, dict]:
    """Where the key goes: `workload/container` -> its secretKeyRef."""
    return {f"{name}/{c['name']}": e["valueFrom"]["secretKeyRef"]
            for name, c in pod_containers(docs) for e in c.get("env", []) if e["name"] == KEY_ENV}


def ensure_items(docs) -> list[dict]:
    jobs = component(docs, "Job", "secrets")
    if not jobs:
        return []
    (c,) = jobs[0]["spec"]["template"]["spec"]["containers"]
    return [json.loads(a) for a in c["args"] if a.startswith("{")]


def resume_items(docs) -> list[dict]:
    return [i for i in ensure_items(docs) if i["key"] == "resume-key"]


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_only_the_interface_container_gets_the_key(values) -> None:
    docs = render(*([values] if values else []))
    assert key_refs(docs) == {"fleet-channels-fleet-interface/interface": GENERATED}
    # Nothing else names the key's Secret but the secrets Job and its Role.
    for d in docs:
        if d["metadata"]["name"] == "fleet-channels-fleet-interface" or (
                d["kind"] in ("Job", "Role") and "-secrets" in d["metadata"]["name"]):
            continue
        assert "resume-key" not in json.dumps(d), (d["kind"], d["metadata"]["name"])


def test_the_secrets_job_makes_the_key_once_and_its_role_reaches_it() -> None:
    docs = render()
    assert resume_items(docs) == [{"secret": GENERATED["name"], "key": "resume-key",
                                   "kind": "password", "options": {"length": 48}}]
    (rule,) = [r for r in one(docs, "Role", "fleet-channels-fleet-secrets")["rules"]
               if "resourceNames" in r]
    assert GENERATED["name"] in rule["resourceNames"]
    # What the Job makes from that item is a key the interface takes (32 bytes at least).
    (raw,) = resume_items(docs)
    item = Item(raw["secret"], raw["key"], raw["kind"], raw["options"])
    made = KINDS[item.kind](item, {})["resume-key"].decode()
    assert len(made) == 48 and made.isalnum()
    assert InterfaceSettings.from_env({"CHANNELS_FLEET_REDIS_URL": "redis://r:6379",
                                       KEY_ENV: made}).resume
    # Made once: a Secret that has the key keeps it.
    assert KINDS[item.kind](item, {"resume-key": made.encode()}) == {}


def test_notes_list_the_key_among_the_secrets_uninstall_keeps() -> None:
    result = helm("install", "fleet", str(SOURCE_CHART), "-n", "chat", "--dry-run=client")
    assert result.returncode == 0, result.stderr
    assert "secret/fleet-channels-fleet-resume-key" in result.stdout.split("NOTES:", 1)[1]


def test_an_existing_secret_is_read_and_none_is_made() -> None:
    docs = render(sets=("resume.existingSecret=my-resume", "resume.existingSecretKey=token-key"))
    assert key_refs(docs) == {"fleet-channels-fleet-interface/interface":
                              {"name": "my-resume", "key": "token-key"}}
    assert resume_items(docs) == []


@pytest.mark.parametrize("sets", [("resume.enabled=false",),
                                  ("resume.enabled=false", "resume.existingSecret=my-resume")])
def test_disabled__no_key_anywhere(sets) -> None:
    docs = render(sets=sets)
    assert key_refs(docs) == {}
    assert resume_items(docs) == []


def test_no_interface__no_key_made() -> None:
    docs = render(sets=("interface.enabled=false", "ingress.enabled=false"))
    assert key_refs(docs) == {}
    assert resume_items(docs) == []


@pytest.mark.parametrize("bad", ["resume.existingSecret=Not_A_Name",
                                 "resume.existingSecretKey=a key"])
def test_the_schema_refuses_a_bad_secret_or_key_name(bad) -> None:
    result = helm("template", "fleet", str(SOURCE_CHART), "--set", bad)
    assert result.returncode != 0
    assert "resume" in result.stderr
