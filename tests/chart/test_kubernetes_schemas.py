"""Every rendered manifest is valid against the Kubernetes OpenAPI schemas of each version.

Schemas come from the kubernetes-validate package (strict: unknown fields are errors). Objects of
CRDs it does not know (ServiceMonitor, PrometheusRule, ScaledObject,
HTTPRoute) are
validated against their CRD schemas by the kubernetes-models npm packages (types, required fields,
enums; unknown fields are pruned by the API server, so not refused there either), installed by
scripts/install-crd-models.sh; test_render.py checks their content.
"""

import functools
import json
import os
import shutil
import subprocess

import pytest
from kubernetes_validate import utils as kv

from .helm import CI_VALUES, ROOT, template

CRD_MODELS = ROOT / ".tools" / "npm" / "node_modules"
CRD_VALIDATOR = ROOT / "tests" / "chart" / "validate_crds.mjs"

# The chart's kubeVersion is >=1.29; validated up to the newest release the helm client knows.
# kubernetes-validate re-reads the (large) definitions file on every call; parsed schemas are
# immutable, so caching them makes validation about ten times faster.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)

SUPPORTED = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0"]


def test_schemas_for_every_supported_version_ship():
    shipped = set(kv.all_versions())
    assert set(SUPPORTED) <= shipped, sorted(shipped)


@pytest.mark.parametrize("version", SUPPORTED)
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_rendered_manifests_are_valid(values, version):
    # The chart does not branch on the Kubernetes version, so one render serves every version.
    result = template(values, crds=True)
    assert result.returncode == 0, result.stderr
    docs = result.docs()
    assert docs
    errors, skipped = [], set()
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError:
            skipped.add(f"{doc['apiVersion']} {doc['kind']}")
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name}: {path}: {exc.message}")
    note = f"; CRDs, checked by their own schemas: {', '.join(sorted(skipped))}" if skipped else ""
    print(f"k8s {version} {values.name}: {len(docs) - len(skipped)} of {len(docs)} valid{note}")
    assert not errors, "\n".join(errors)


def test_kube_version_floor():
    assert template(kube_version="v1.29.0").returncode == 0
    old = template(kube_version="v1.28.9")
    assert old.returncode != 0 and "kubeVersion" in old.stderr, old.stderr


def test_validation_catches_a_broken_manifest():
    """The validator is not a no-op: a typo'd field in a Deployment is refused."""
    doc = template(CI_VALUES[0]).docs()
    dep = next(d for d in doc if d["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, SUPPORTED[-1], strict=True)


def validate_crds(objects: list[dict]) -> list[dict]:
    node = shutil.which("node")
    if not (CRD_MODELS / "@kubernetes-models").is_dir() or not node:
        pytest.skip("CRD validators not installed: run scripts/install-crd-models.sh")
    proc = subprocess.run([node, str(CRD_VALIDATOR)], input=json.dumps(objects),
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CRD_MODELS_DIR": str(CRD_MODELS)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_custom_resources_match_their_crd_schemas(values):
    docs = template(values, crds=True).docs()
    custom = [d for d in docs if d["apiVersion"].split("/")[0].endswith(
        ("monitoring.coreos.com", "keda.sh", "gateway.networking.k8s.io"))]
    if not custom:
        print(f"{values.name}: no custom resources")
        return
    results = validate_crds(custom)
    print(f"{values.name}: " + ", ".join(f"{r['name']} {r['status']}" for r in results))
    assert all(r["status"] == "valid" for r in results), results


def test_crd_validation_catches_a_broken_httproute():
    docs = template(CI_VALUES[3], crds=True).docs()
    (route,) = [d for d in docs if d["kind"] == "HTTPRoute"]
    route["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Prefix"  # the Ingress spelling
    (result,) = validate_crds([route])
    assert result["status"] == "invalid", result


def test_crd_validation_catches_a_broken_scaledobject():
    docs = template(CI_VALUES[-1], crds=True).docs()
    (so,) = [d for d in docs if d["kind"] == "ScaledObject"]
    so["spec"]["triggers"][0]["metadata"]["threshold"] = 0.7  # KEDA wants strings
    (result,) = validate_crds([so])
    assert result["status"] == "invalid"
    assert "threshold must be string" in result["error"]
