"""The interface acts only on what a connection's current owner sends.

A worker that was cut off (SIGSTOP, partition) may, before it notices it was declared dead,
still send app output for sockets that were re-homed away meanwhile: the gateway ignores
every item whose batch sender is not the connection's owner. (The end-to-end re-home tests
cover the rest; here the rule itself, on the gateway's item handler.)
"""

from __future__ import annotations

from typing import Any

from channels_fleet.interface.client import OWNED, REHOMING, ClientConn
from channels_fleet.interface.gateway import Gateway
from channels_fleet.interface.settings import InterfaceSettings

OLD, NEW = "fleet.worker.a!old", "fleet.worker.b!new"


def gateway_with(conn_owner: str) -> tuple[Gateway, ClientConn, list[dict[str, Any]]]:
    written: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        written.append(message)

    gateway = Gateway(InterfaceSettings.from_env({"CHANNELS_FLEET_REDIS_URL": "redis://x:1"}))
    conn = ClientConn("i.1", True, send, {"type": "websocket", "path": "/ws/"})
    conn.owner, conn.state, conn.accepted = conn_owner, OWNED, True
    gateway.conns[conn.id] = conn
    return gateway, conn, written


async def test_items_from_a_former_owner_are_ignored() -> None:
    gateway, conn, written = gateway_with(NEW)
    text = {"type": "websocket.send", "text": "late, from the old worker"}
    await gateway._on_send(conn.id, text, OLD)
    await gateway._on_end(conn.id, None, OLD)
    await gateway._on_release(conn.id, 1012, OLD)
    assert written == [] and not conn.finished


async def test_items_from_the_owner_are_written() -> None:
    gateway, conn, written = gateway_with(NEW)
    text = {"type": "websocket.send", "text": "hi"}
    await gateway._on_send(conn.id, text, NEW)
    assert written == [text]


async def test_a_rehomed_sockets_second_accept_is_not_sent_and_a_refusal_closes_1008() -> None:
    gateway, conn, written = gateway_with(NEW)
    conn.rehomed, conn.state = 1, REHOMING  # handed over; the new owner's app is connecting
    await gateway._on_send(conn.id, {"type": "websocket.accept"}, NEW)
    assert written == [] and conn.state is OWNED  # re-homing over
    gateway, conn, written = gateway_with(NEW)
    conn.rehomed, conn.state = 1, REHOMING
    await gateway._on_send(conn.id, {"type": "websocket.close"}, NEW)
    assert written == [{"type": "websocket.close", "code": 1008}] and conn.finished
