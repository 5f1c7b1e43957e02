"""What tests/e2e/k8s measures, collected for the `k8s-e2e:` line that scripts/k8s/e2e.sh prints.

Each test stores its field (`RESULTS`) and the time of its phase (`phase()`); the session's end
writes both to $E2E_K8S_RESULTS as JSON. A field a test never stored prints as FAIL.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

RESULTS: dict[str, Any] = {}
PHASES: dict[str, float] = {}


@contextmanager
def phase(name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        PHASES[name] = round(time.perf_counter() - t0, 1)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("E2E_K8S_RESULTS")
    if path and (RESULTS or PHASES):
        with open(path, "w") as out:
            json.dump({**RESULTS, "phases": PHASES}, out, indent=1)
