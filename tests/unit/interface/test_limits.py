"""Per-client connection limit (CHANNELS_FLEET_MAX_CONNECTIONS_PER_CLIENT)."""

from __future__ import annotations

import logging

import pytest

from channels_fleet.interface.limits import ClientLimit, client_key, refuse
from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.settings import SettingsError

SCOPE = {"type": "websocket", "path": "/ws/x/", "client": ["10.0.0.7", 5000]}


def test_limit__counts_per_address_refuses_past_it_with_one_log_line(caplog) -> None:
    limit = ClientLimit(2)
    key = client_key(SCOPE)
    assert key == "10.0.0.7"
    with caplog.at_level(logging.WARNING, logger="channels_fleet.interface.limits"):
        assert limit.acquire(key, SCOPE) and limit.acquire(key, SCOPE)
        assert not limit.acquire(key, SCOPE)
        assert limit.acquire("10.0.0.8", SCOPE)  # another address has its own count
    assert len(caplog.records) == 1
    assert "CHANNELS_FLEET_MAX_CONNECTIONS_PER_CLIENT=2" in caplog.records[0].getMessage()
    limit.release(key)
    assert limit.acquire(key, SCOPE)
    for _ in range(3):
        limit.release(key)
    assert key not in limit.open  # no entry left behind for an address that went away


def test_limit_zero__off() -> None:
    limit = ClientLimit(0)
    assert all(limit.acquire("a", SCOPE) for _ in range(10_000))
    assert limit.open == {}
    assert client_key({"type": "http"}) == "unknown"


def test_setting__default_off_negative_refused() -> None:
    assert InterfaceSettings.from_env({"CHANNELS_FLEET_REDIS_URL": "redis://r:6379"}
                                      ).max_connections_per_client == 0
    with pytest.raises(SettingsError, match="MAX_CONNECTIONS_PER_CLIENT"):
        InterfaceSettings.from_env({"CHANNELS_FLEET_REDIS_URL": "redis://r:6379",
                                    "CHANNELS_FLEET_MAX_CONNECTIONS_PER_CLIENT": "-1"})


async def test_refuse__websocket_403_before_accept__http_429() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    await refuse(SCOPE, receive, send)
    assert sent == [{"type": "websocket.close"}]
    sent.clear()
    await refuse({"type": "http", "path": "/"}, receive, send)
    assert sent[0]["status"] == 429 and not sent[1].get("more_body")
