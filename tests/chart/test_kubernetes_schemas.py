"""Every rendered manifest is valid against the Kubernetes OpenAPI schemas of each version.

Schemas come from the kubernetes-validate package (strict: unknown fields are errors). Objects of
CRDs it does not know (ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication) are
skipped with a printed note; test_render.py checks their content.
"""

import functools

import pytest
from kubernetes_validate import utils as kv

from .helm import CI_VALUES, template

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
    note = f"; CRDs not in the schemas, skipped: {', '.join(sorted(skipped))}" if skipped else ""
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
