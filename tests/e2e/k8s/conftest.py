"""What tests/e2e/k8s measures, collected for the `k8s-e2e:` line that scripts/k8s/e2e.sh prints.

Each test stores its field (`RESULTS`) and the time of its phase (`phase()`); the session's end
writes both to $E2E_K8S_RESULTS as JSON. A field a test never stored prints as FAIL.

Every test also keeps the interfaces' and workers' logs over its run ($E2E_K8S_LOGS/tests/<test>/),
and a failed one shows their warnings and errors in its report: CI keeps only the output, and the
pods are gone by then.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

RESULTS: dict[str, Any] = {}
PHASES: dict[str, float] = {}
#: Lines of a pod's log shown for a failed test: what a process says when something goes wrong.
NOTEWORTHY = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|Error:|Exception")
SHOWN_PER_POD = 25
_LOGS = pytest.StashKey[Path]()


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


@pytest.fixture(autouse=True)
def _pod_logs_kept(request: pytest.FixtureRequest) -> Iterator[None]:
    if not (os.environ.get("E2E_K8S") and os.environ.get("E2E_K8S_LOGS")):
        yield
        return
    from .nodes import pod_logs  # the cluster's helpers, only where the cluster runs
    from .release import Release

    name = re.sub(r"[^\w.-]+", "_", request.node.name).strip("_")
    request.node.stash[_LOGS] = Path(os.environ["E2E_K8S_LOGS"], "tests", name)
    with pod_logs(Release.from_env(), f"tests/{name}"):
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    report = yield
    folder = item.stash.get(_LOGS, None)
    if report.when == "call" and report.failed and folder is not None:
        report.sections.append(("pods' warnings and errors over the test", noteworthy(folder)))
    return report


def noteworthy(folder: Path) -> str:
    """The last warnings and errors of each pod's log in ``folder`` (being written still)."""
    shown = []
    for log in sorted(folder.glob("*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if NOTEWORTHY.search(line)]
        shown.append(f"{log.stem}: {len(lines)} line(s)")
        shown += [f"  {line[:300]}" for line in lines[-SHOWN_PER_POD:]]
    return "\n".join(shown) or f"no pod log in {folder}"
