"""A worker whose output Redis refuses for its interface (the shard of the interface's inbox
down past the layer's retries): the socket is closed, never left open and unserved."""

from __future__ import annotations

import asyncio

import pytest

from channels_fleet.worker import host as host_module

pytestmark = pytest.mark.timeout(20)


async def test_output_refused__socket_closed_1013_once_redis_takes_the_release(
    fleet, monkeypatch
) -> None:
    monkeypatch.setattr(host_module, "RELEASE_RETRY", 0.1)
    await fleet.add_host()
    client = fleet.client("/ws/")
    assert (await client.connect())["type"] == "websocket.accept"
    fleet.layer.refuse(fleet.gateway.side.channel)
    client.send_text("echo lost")  # its echo cannot reach the interface
    await asyncio.sleep(0.5)  # the echo dropped; the RELEASEs after it refused too
    assert fleet.app.seen()[-1] == {"type": "websocket.disconnect", "code": 1013}
    assert client.sent.empty()  # nothing reached the socket yet
    fleet.layer.accept(fleet.gateway.side.channel)  # the shard is back
    assert await client.next() == {"type": "websocket.close", "code": 1013}


async def test_channel_message_refused__socket_closed_1013(fleet) -> None:
    """A message to a consumer's channel that Redis will not take for its worker: the socket
    is closed, as for a client frame, never left with a hole."""
    host = await fleet.add_host()
    client = fleet.client("/ws/")
    assert (await client.connect())["type"] == "websocket.accept"
    conn = next(iter(fleet.gateway.conns.values()))
    conn.channel = fleet.gateway.inboxes.name(conn.id)  # homed (only the Redis layer homes)
    fleet.layer.refuse(host.side.channel)
    fleet.gateway.inboxes.deliver([conn.id], b"a group message")
    assert await client.next() == {"type": "websocket.close", "code": 1013}
