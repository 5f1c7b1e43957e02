"""The DETACHED state's moves (owned.py's table): in from RUNNING only, out by attach, close or
abandon; anything else raises."""

from __future__ import annotations

import pytest

from channels_fleet.exceptions import IllegalTransition
from channels_fleet.worker.owned import ABANDONED, CLOSED, DETACHED, RUNNING, OwnedConn

pytestmark = pytest.mark.timeout(5)


def conn() -> OwnedConn:
    return OwnedConn("c.1~1", "fleet.iface.a!1", True, limit=10, reap_after=1.0)


async def test_detach_then_attach_takes_the_new_claim_and_interface() -> None:
    owned = conn()
    owned.detach()
    assert owned.state is DETACHED
    owned.attach("fleet.iface.b!2", "c.1~2")
    assert (owned.state, owned.id, owned.iface) == (RUNNING, "c.1~2", "fleet.iface.b!2")
    owned.attach("fleet.iface.c!3", "c.1~3")  # a second resume of an attached session
    assert (owned.state, owned.id) == (RUNNING, "c.1~3")


async def test_detached_ends_by_close_or_abandon() -> None:
    owned = conn()
    owned.detach()
    owned.close()
    assert owned.state is CLOSED
    other = conn()
    other.detach()
    other.abandon()
    assert other.state is ABANDONED and other.gone


async def test_illegal_moves_raise() -> None:
    handing = conn()
    handing.begin_hand_back()
    with pytest.raises(IllegalTransition):
        handing.detach()  # nobody would hold its socket to re-home it
    detached = conn()
    detached.detach()
    with pytest.raises(IllegalTransition):
        detached.begin_hand_back()
    with pytest.raises(IllegalTransition):
        detached.detach()
    closed = conn()
    closed.close()
    with pytest.raises(IllegalTransition):
        closed.attach("fleet.iface.b!2", "c.1~2")
