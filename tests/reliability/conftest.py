"""Fixtures of the reliability scenarios: real processes, real Redis, measured figures.

Every scenario records what it ran, what it counted and the result through the ``figures``
fixture. With ``RELIABILITY_RESULTS=<file>`` set (``scripts/reliability-report.py`` sets it) each
record is appended to that file as one JSON line; the script turns them into the table of
docs/reliability.md. Without it the figures are only asserted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SPLIT = Path(__file__).resolve().parent.parent / "integration" / "split"
if str(SPLIT) not in sys.path:
    sys.path.insert(0, str(SPLIT))

from split_fleet import Fleet  # noqa: E402

from channels_fleet.devcluster import LocalRedis  # noqa: E402


class Figures:
    """Collects one scenario's measured figures and writes them out, pass or fail."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.rows: list[dict[str, Any]] = []

    def record(self, scenario: str, run: str, counted: str, result: str, ok: bool,
               **numbers: Any) -> None:
        self.rows.append({"scenario": scenario, "run": run, "counted": counted, "result": result,
                          "ok": bool(ok), "test": self.test, "numbers": numbers,
                          "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})

    def flush(self) -> None:
        path = os.environ.get("RELIABILITY_RESULTS")
        if not path or not self.rows:
            return
        with open(path, "a", encoding="utf-8") as out:
            for row in self.rows:
                out.write(json.dumps(row) + "\n")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    fig = Figures(request.node.nodeid)
    try:
        yield fig
    finally:
        fig.flush()


@pytest.fixture(scope="module")
def rel_fleet(redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Fleet]:
    fleet = Fleet(redis_cluster.urls[:3], True, tmp_path_factory.mktemp("relfleet"))
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def fleet(rel_fleet: Fleet) -> Iterator[Fleet]:
    """Each test starts its own processes; none outlives it (they share fleet.connect)."""
    try:
        yield rel_fleet
    finally:
        rel_fleet.stop()


def rehome_modes() -> list[str]:
    """The worker-loss modes this build has: 'off' always; 'on' once issue 9's setting exists."""
    from channels_fleet.settings import InterfaceSettings

    fields = getattr(InterfaceSettings, "__dataclass_fields__", {})
    return ["off", "on"] if "rehome" in fields else ["off"]
