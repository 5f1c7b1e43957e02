"""The relay's outbox is bounded: past MAX_PENDING only control items are queued."""

from __future__ import annotations

import pytest

from channels_fleet.relay import relay, wire


def test_post__refuses_data_past_the_bound_but_keeps_control_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay, "MAX_PENDING", 3)
    r = relay.Relay(layer=None, prefix="fleet.test")
    assert all(r.post("dest", [wire.EVENT, "c", {"type": "x"}]) for _ in range(3))
    assert r.post("dest", [wire.EVENT, "c", {"type": "x"}]) is False
    assert r.post("dest", [wire.GONE, "c", 1006], control=True) is True
    assert [item[0] for item in r._outbox["dest"]] == [wire.EVENT] * 3 + [wire.GONE]
