"""Container tests: the real images, run by podman (runc) as they run in the cluster.

The images are built (incrementally) once per session with ``scripts/images.sh images``, the
same command as ``make images``; the tests skip only where podman itself cannot run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fleet_podman import ROOT, unusable_reason


@pytest.fixture(scope="session")
def images() -> None:
    reason = unusable_reason()
    if reason:
        pytest.skip(reason)
    out = subprocess.run(
        ["scripts/images.sh", "images"], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PY": sys.executable},
    )
    assert out.returncode == 0, f"image build failed:\n{out.stdout}\n{out.stderr}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    stack = sys.modules.get("test_stack")
    times = getattr(stack, "START_TIMES", None)
    if times:
        terminalreporter.write_line("container start, podman run -> /readyz 200: " + ", ".join(
            f"{name} {min(t):.1f}-{max(t):.1f}s" for name, t in sorted(times.items())
        ))
