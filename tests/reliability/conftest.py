"""Fixtures of the reliability scenarios: real processes, real Redis, measured figures.

Every scenario records what it ran, what it counted and the result through the ``figures``
fixture. With ``RELIABILITY_RESULTS=<file>`` set (``scripts/reliability-report.py`` sets it) each
record is appended to that file as one JSON line; the script turns them into the table of
docs/reliability.md. Without it the figures are only asserted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from relfigures import Figures
from support.split import split_stack

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.stack import FleetStack


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    fig = Figures(request.node.nodeid)
    try:
        yield fig
    finally:
        fig.flush()


@pytest.fixture(scope="module")
def rel_fleet(redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[FleetStack]:
    fleet = split_stack(redis_cluster.urls[:3], tmp_path_factory.mktemp("relfleet"))
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def fleet(rel_fleet: FleetStack) -> Iterator[FleetStack]:
    """Each test starts its own processes; none outlives it (they share fleet.connect)."""
    try:
        yield rel_fleet
    finally:
        rel_fleet.stop()
