"""The interface acts only on what a connection's current claim sends.

Every connect envelope is a new claim (``wire.claim_id``), which the owner echoes in all it
relays. A worker that was cut off (SIGSTOP, partition) may, before it notices it was declared
dead, still send app output for sockets that were re-homed away meanwhile; and a worker that
claims a socket again may still send what its earlier app instance said: the gateway ignores
every item of a claim that is not the current one, whoever sends it. (The end-to-end re-home
tests cover the rest; here the rule itself, on the gateway's item handlers.)
"""

from __future__ import annotations

from typing import Any

from channels_fleet.interface.client import OWNED, REHOMING, ClientConn
from channels_fleet.interface.gateway import Gateway
from channels_fleet.interface.settings import InterfaceSettings

OLD, NEW = "fleet.worker.a!old", "fleet.worker.b!new"


def gateway_with(conn_owner: str) -> tuple[Gateway, ClientConn, list[dict[str, Any]]]:
    """A gateway with one socket owned by ``conn_owner`` under its second claim."""
    written: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        written.append(message)

    gateway = Gateway(InterfaceSettings.from_env({"CHANNELS_FLEET_REDIS_URL": "redis://x:1"}))
    conn = ClientConn("i.1", True, send, {"type": "websocket", "path": "/ws/"})
    conn.await_claim()
    conn.await_claim()
    conn.claimed_by(conn_owner)
    conn.accepted = True
    gateway.conns.add(conn)
    return gateway, conn, written


async def test_items_of_an_earlier_claim_are_ignored__from_another_worker_or_the_owner() -> None:
    for sender in (OLD, NEW):
        gateway, conn, written = gateway_with(NEW)
        earlier = "i.1~1"
        text = {"type": "websocket.send", "text": "late, from the earlier app instance"}
        await gateway.items.on_send(earlier, text, sender)
        await gateway.items.on_end(earlier, None, sender)
        await gateway.items.on_release(earlier, 1012, sender)
        await gateway.rehoming.on_rehome(earlier, "drain", sender)
        assert written == [] and not conn.finished and conn.state is OWNED


async def test_items_of_the_current_claim_are_written() -> None:
    gateway, conn, written = gateway_with(NEW)
    text = {"type": "websocket.send", "text": "hi"}
    await gateway.items.on_send(conn.claim_id, text, NEW)
    assert conn.claim_id == "i.1~2" and written == [text]


async def test_a_rehomed_sockets_second_accept_is_not_sent_and_a_refusal_closes_1008() -> None:
    gateway, conn, written = gateway_with(NEW)
    conn.rehomed, conn.state = 1, REHOMING  # handed over; the new owner's app is connecting
    await gateway.items.on_send(conn.claim_id, {"type": "websocket.accept"}, NEW)
    assert written == [] and conn.state is OWNED  # re-homing over
    gateway, conn, written = gateway_with(NEW)
    conn.rehomed, conn.state = 1, REHOMING
    await gateway.items.on_send(conn.claim_id, {"type": "websocket.close"}, NEW)
    assert written == [{"type": "websocket.close", "code": 1008}] and conn.finished
