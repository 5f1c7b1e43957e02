"""A fresh once-per-process refusal log of the layer (``channels_fleet.layers.acl``) per test.

A test module or conftest.py that imports ``fresh_acl_state`` gets it for every test there.
"""

from __future__ import annotations

import pytest

from channels_fleet.layers import acl


@pytest.fixture(autouse=True)
def fresh_acl_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the first refusal of each command (logged once per process)."""
    monkeypatch.setattr(acl, "_logged", set())
    monkeypatch.setattr(acl, "WAKE", acl.Wake())
