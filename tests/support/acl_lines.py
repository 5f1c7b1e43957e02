"""docs/redis-acl.md's ``ACL SETUSER`` lines, read from the docs so tests and docs cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "redis-acl.md"
ROLES = ("interface", "worker", "web", "exporter")


def documented_lines() -> dict[str, list[str]]:
    """``{role: [rule, ...]}`` of the ``ACL SETUSER fleet-<role>`` lines in the docs' block."""
    text = DOCS.read_text()
    marker = text.index("<!-- acl-lines")
    block = re.search(r"```text\n(.*?)```", text[marker:], re.S)
    assert block, "docs/redis-acl.md: no ```text block after the acl-lines marker"
    lines = {}
    for line in block.group(1).splitlines():
        words = line.split()
        assert words[:2] == ["ACL", "SETUSER"], line
        lines[words[2].removeprefix("fleet-")] = words[3:]
    assert sorted(lines) == sorted(ROLES)
    return lines


def with_password(rules: list[str], password: str) -> list[str]:
    """``rules`` with the documented ``>...-password`` replaced by ``password``."""
    return [f">{password}" if rule.startswith(">") else rule for rule in rules]
