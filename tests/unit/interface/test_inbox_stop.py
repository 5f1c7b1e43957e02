"""A draining interface stops popping its homed channels' LIST (inbox.py): a pop under way is
delivered, a wait on an empty LIST given up, and what is pushed after stays in the LIST for the
worker that adopts a gone home's LIST."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from channels_fleet.interface.inbox import Inboxes
from channels_fleet.interface.settings import InterfaceSettings

pytestmark = pytest.mark.timeout(10)


class ListLayer:
    """The one layer call Inboxes makes: pop the inbox LIST, blocking while it is empty."""

    def __init__(self) -> None:
        self.items: list[tuple[list[str], bytes]] = []
        self.pushed = asyncio.Event()

    def push(self, conn_id: str, body: bytes) -> None:
        self.items.append(([f"specific.fleetabc!{conn_id}"], body))
        self.pushed.set()

    async def receive_all(self, inbox: str, busy: bool) -> list[tuple[list[str], bytes]]:
        while not self.items:
            if busy:
                return []
            self.pushed.clear()
            await self.pushed.wait()
        taken, self.items = self.items[:2], self.items[2:]  # a batch of two
        return taken

    async def close_pools(self) -> None:
        pass


class OneLayer(Inboxes):
    """Inboxes on a ListLayer instead of a Redis layer."""

    def __init__(self, layer: ListLayer, deliver: Any) -> None:
        super().__init__(InterfaceSettings(redis_url="redis://127.0.0.1:1"), deliver)
        self.layer = layer

    def _layer(self, prefix: str) -> Any:
        return self.layer


async def test_stop_pulling__waiting_pop_given_up__later_messages_stay_in_the_list() -> None:
    layer = ListLayer()
    got: list[tuple[list[str], bytes]] = []
    inboxes = OneLayer(layer, lambda ids, body: got.append((ids, body)))
    inboxes.start("fleet.iface!abc")
    inboxes.pull("chat")
    layer.push("c1", b"one")
    await asyncio.sleep(0.01)
    assert got == [(["c1"], b"one")]  # delivered; the pull now waits on the empty LIST
    await inboxes.stop_pulling()
    layer.push("c1", b"two")
    await asyncio.sleep(0.01)
    assert got == [(["c1"], b"one")] and len(layer.items) == 1  # left for an adopter
    await inboxes.close()


async def test_stop_pulling__a_busy_pop_is_delivered_first() -> None:
    layer = ListLayer()
    got: list[bytes] = []
    inboxes = OneLayer(layer, lambda ids, body: got.append(body))
    inboxes.start("fleet.iface!abc")
    for n in range(3):
        layer.push("c1", f"m{n}".encode())
    inboxes.pull("chat")
    stop = asyncio.create_task(inboxes.stop_pulling())  # while the first batch is delivered
    await stop
    assert got[:2] == [b"m0", b"m1"] and got == [b"m0", b"m1", b"m2"][:len(got)]
    assert len(got) + len(layer.items) == 3  # nothing popped and dropped
    await inboxes.close()
