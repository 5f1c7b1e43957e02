"""The relay's outbox is bounded: past MAX_PENDING only control items are queued; a trailer
(the worker's ACK) rides last in the batches to its destination."""

from __future__ import annotations

import asyncio

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


class RecordingLayer:
    """Just enough of a channel layer for a Relay: sends are recorded, receives wait."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def new_channel(self, prefix: str) -> str:
        return f"{prefix}!test"

    async def send(self, channel: str, message: dict) -> None:
        self.sent.append((channel, message))

    async def receive(self, channel: str) -> dict:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_trailer__last_item_of_the_last_batch_to_its_destination_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay, "MAX_BATCH_BYTES", 200)  # 64 bytes an item: 3 a batch
    layer = RecordingLayer()
    r = relay.Relay(layer, "fleet.test")
    ack = [wire.ACK, "", [["c", 4, 4]]]
    r.set_trailer(lambda dest: ack if dest == "iface.a" else None)
    await r.start()
    try:
        for n in range(4):
            r.post("iface.a", [wire.SEND, "c", {"type": "websocket.send", "text": str(n)}])
        r.post("iface.b", [wire.SEND, "d", {"type": "websocket.send", "text": "x"}])
        assert await r.flushed(1)
    finally:
        await r.stop()
    to = {dest: [[item[0] for item in m["items"]] for d, m in layer.sent if d == dest]
          for dest in ("iface.a", "iface.b")}
    # Split in two batches (in order): the ACK goes once, after every item posted before it.
    assert to == {"iface.a": [[wire.SEND] * 3, [wire.SEND, wire.ACK]], "iface.b": [[wire.SEND]]}
