"""The shared e2e scenarios (tests/e2e/scenarios.py) against local processes: ``make e2e-local``.

2 interfaces behind a readiness-aware balancer (the Service), 1 to 3 workers, all running the
demo chat (examples/chat) on the session's Redis Cluster. One test per scenario, in the order
of ``scenarios.ALL`` (they share one stack); each prints what it measured (``pytest -s``).
"""

from __future__ import annotations

import time

import pytest

from .. import scenarios
from .conftest import MEASURED
from .local_stack import LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.mark.parametrize("scenario", scenarios.ALL, ids=lambda s: s.__name__)
async def test_scenario(local_stack: LocalStack, scenario) -> None:
    t0 = time.perf_counter()
    try:
        result = await scenario(local_stack)
    except BaseException:
        for proc in local_stack.procs:
            print(f"--- {proc.name} (pid {proc.popen.pid}, alive={proc.alive()}):\n"
                  f"{proc.tail(15)}")
        raise
    line = f"{scenario.__name__}: {result} ({time.perf_counter() - t0:.1f} s)"
    MEASURED.append(line)  # the terminal summary (conftest.py) repeats it without -s
    print(f"\ne2e-local {line}")
