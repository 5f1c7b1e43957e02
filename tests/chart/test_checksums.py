"""The pods' checksum/* annotations hash the Secrets and ConfigMaps of the same render.

They follow only what the render holds: values (an external URL, the Redis configuration). The
generated passwords are made in the cluster (test_gitops.py), so no checksum follows them and two
renders roll nothing.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from .helm import template

SECRETS = ("redis-secret", "database-secret")
EXTERNAL = ("redis.external.url=rediss://:p@cache.example:6379",
            "database.external.url=postgres://u:p@db.example:5432/app")


@pytest.mark.parametrize("secret", SECRETS)
def test_checksum_annotations_hash_the_secret_this_render_made(secret: str) -> None:
    result = template(sets=EXTERNAL)
    assert result.returncode == 0, result.stderr
    source = f"# Source: channels-fleet/templates/{secret}.yaml\n"
    (chunk,) = [c for c in result.stdout.split("---\n") if c.startswith(source)]
    # helm prints a template's output after its Source line; the include hashed it as rendered.
    rendered = "\n" + chunk.removeprefix(source)
    expected = hashlib.sha256(rendered.encode()).hexdigest()
    annotated = set(re.findall(rf"checksum/{secret}: (\w+)", result.stdout))
    assert annotated == {expected}, f"checksum/{secret}: {annotated}, the Secret: {expected}"


def test_no_checksum_follows_a_generated_secret() -> None:
    result = template()
    assert result.returncode == 0, result.stderr
    assert not re.findall(r"checksum/\w+-secret", result.stdout)
