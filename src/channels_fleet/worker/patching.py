"""Swap a function in the modules where Channels looks it up, and put the original back.

The worker's start-up replacements (``dispatch``, ``dbcleanup``) rebind the name in every
module that imported it with ``from ... import name``, since that is where it is looked up.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

_originals: dict[tuple[str, str], Any] = {}


def replace(modules: Iterable[str], name: str, replacement: Any) -> bool:
    """Bind ``name`` to ``replacement`` in each module; False if it was already everywhere."""
    changed = False
    for module_name in modules:
        module = importlib.import_module(module_name)
        current = getattr(module, name)
        if current is replacement:
            continue
        _originals.setdefault((module_name, name), current)
        setattr(module, name, replacement)
        changed = True
    return changed


def restore(modules: Iterable[str], name: str) -> None:
    """Undo :func:`replace` (for tests)."""
    for module_name in modules:
        original = _originals.pop((module_name, name), None)
        if original is not None:
            setattr(importlib.import_module(module_name), name, original)
