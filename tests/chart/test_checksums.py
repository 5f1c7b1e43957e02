"""The pods' checksum/* annotations hash the Secrets of the same render.

A generated password is made once per render: before, the Secret and the checksum (which renders
the Secret again) each made their own, so the first `helm upgrade` (which finds the Secret and
keeps its password) changed every checksum and rolled Redis, PostgreSQL and every app pod, and
the Redis pods came back with new IPs (found by make e2e-k8s).
"""

from __future__ import annotations

import hashlib
import re

import pytest

from .helm import template

SECRETS = ("redis-secret", "database-secret")


@pytest.mark.parametrize("secret", SECRETS)
def test_checksum_annotations_hash_the_secret_this_render_made(secret: str) -> None:
    result = template()
    assert result.returncode == 0, result.stderr
    source = f"# Source: channels-fleet/templates/{secret}.yaml\n"
    (chunk,) = [c for c in result.stdout.split("---\n") if c.startswith(source)]
    # helm prints a template's output after its Source line; the include hashed it as rendered.
    rendered = "\n" + chunk.removeprefix(source)
    expected = hashlib.sha256(rendered.encode()).hexdigest()
    annotated = set(re.findall(rf"checksum/{secret}: (\w+)", result.stdout))
    assert annotated == {expected}, f"checksum/{secret}: {annotated}, the Secret: {expected}"
