"""An import-linter contract type of our own: no module imports another module's private names.

``from .gateway import _claim`` reaches into a sibling's internals as surely as
``gateway._claim(...)`` does (ruff's SLF001 catches that one). import-linter's own contracts
cover private *modules* (``private_modules``); this one covers private *names*: every
``from X import _name`` in the root packages, X any other module, breaks it. Dunder names
(``__version__``) are public. Used by ``.importlinter`` (``make lint``).
"""

from __future__ import annotations

import ast
import importlib.util
from typing import Any

from importlinter.application import output
from importlinter.domain.contract import Contract, ContractCheck


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _source(module: str) -> tuple[str, bool] | None:
    """The module's source path, and whether it is a package (``__init__``)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return spec.origin, spec.submodule_search_locations is not None


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name of the module a ``from ... import`` reads."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    keep = len(base) - node.level + (1 if is_package else 0)
    return ".".join(base[:keep] + ([node.module] if node.module else []))


class PrivateNamesContract(Contract):
    """No ``from <another module> import _private`` anywhere in the graph's modules."""

    type_name = "private_names"

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        found = []
        for module in sorted(graph.modules):
            source = _source(module)
            if source is None:
                continue
            path, is_package = source
            with open(path, encoding="utf-8") as file:
                tree = ast.parse(file.read(), path)
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom):
                    continue
                target = _target(module, is_package, node)
                for alias in node.names:
                    if f"{target}.{alias.name}" in graph.modules:
                        continue  # a private module: the private_modules contract's business
                    if _private(alias.name) and target != module:
                        found.append(f"{module}:{node.lineno} imports {target}.{alias.name}")
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["found"]:
            output.print_error(line, bold=False)
            output.new_line()
