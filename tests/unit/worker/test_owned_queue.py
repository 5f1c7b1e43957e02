"""What owned.py does with the events waiting for the app: stashed on a hand-back, marked on a
resume (a mark kept once made), a disconnect handed over past a full queue."""

from __future__ import annotations

import pytest

from channels_fleet.worker.owned import HANDED, OwnedConn

pytestmark = pytest.mark.timeout(5)


def conn(limit: int = 3) -> OwnedConn:
    return OwnedConn("c.1~1", "fleet.iface.a!1", True, limit=limit, reap_after=1.0)


async def test_a_mark_once_made_survives_a_second_resume() -> None:
    owned = conn()
    owned.queue.put({"type": "websocket.receive", "text": "a"})
    owned.mark_queued("uncounted", "c.1~1")  # first resume: came under the home's claim
    owned.queue.put({"type": "websocket.receive", "text": "b"})
    owned.mark_queued("uncounted", "c.1~2")  # second resume before the app read them
    assert [(e["text"], e["uncounted"]) for e in owned.queue.drain()] == [
        ("a", "c.1~1"), ("b", "c.1~2")]


async def test_marking_copies_events_that_may_be_shared() -> None:
    owned = conn()
    shared = {"type": "websocket.receive", "text": "a"}
    owned.queue.put(shared)
    owned.mark_queued("uncounted", "c.1~1")
    assert "uncounted" not in shared


async def test_a_hand_back_stashes_what_the_app_never_read_first() -> None:
    owned = conn()
    owned.queue.put({"type": "websocket.receive", "text": "queued"})
    owned.begin_hand_back()
    owned.keep({"type": "websocket.receive", "text": "arrived while handing back"})
    owned.hand_back()
    assert owned.state is HANDED and owned.queue.empty()
    assert [e["text"] for e in owned.stash] == ["queued", "arrived while handing back"]


async def test_the_disconnect_reaches_the_app_past_a_full_queue() -> None:
    owned = conn(limit=2)
    owned.queue.put({"type": "websocket.receive", "text": "1"})
    owned.queue.put({"type": "websocket.receive", "text": "2"})
    owned.disconnect(1001)
    events = owned.queue.drain()
    assert events[-1] == {"type": "websocket.disconnect", "code": 1001} and len(events) == 2
    assert owned.reaper is not None
    owned.reaper.cancel()
