"""Fixtures of the unit tests: a loopback fleet (tests/support/loopback.py), stopped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.loopback import EchoApp, LoopbackFleet

#: The loopback fleet's claim deadline: short, so refusals are quick to see.
CLAIM_TIMEOUT = 0.3


@pytest.fixture
async def fleet() -> AsyncIterator[LoopbackFleet]:
    """A Gateway (claim timeout CLAIM_TIMEOUT) and no worker yet, running EchoApp."""
    fleet = await LoopbackFleet(EchoApp(), claim_timeout=CLAIM_TIMEOUT).start()
    yield fleet
    await fleet.stop()
