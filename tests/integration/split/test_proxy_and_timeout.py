"""Proxy headers and the HTTP timeout as Daphne has them, through real processes.

A plain ``daphne --proxy-headers`` serves the same project beside the split, so the scope the
app sees (``client``, ``server``, their types, ``scheme``) is compared with Daphne's own.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from typing import Any

import pytest
from redis.cluster import RedisCluster
from websockets.asyncio.client import connect

from channels_fleet.dev.ports import free_ports
from channels_fleet.dev.stack import FleetStack, ServiceProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(90)]

FORWARDED = {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Port": "80",
             "X-Forwarded-Proto": "https"}


def get(port: int, path: str, headers: dict[str, str] | None = None,
        timeout: float = 20) -> tuple[int, bytes, float]:
    """(status, body, seconds taken) of one GET."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "127.0.0.1", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        conn.close()


async def ws_whoami(port: int, headers: dict[str, str]) -> dict[str, Any]:
    async with connect(f"ws://127.0.0.1:{port}/ws/echo/me/", open_timeout=20,
                       origin=f"http://127.0.0.1:{port}", additional_headers=headers) as sock:
        await sock.send("whoami")
        return dict(json.loads(await sock.recv()))


@pytest.fixture(scope="module")
def daphne_port(fleet_factory: FleetStack) -> int:
    (port,) = free_ports(1)
    fleet_factory.spawn("daphne", [sys.executable, "-m", "daphne", "--proxy-headers", "-b",
                                   "127.0.0.1", "-p", str(port),
                                   "splitproject.asgi:application"], port=port)
    deadline = time.monotonic() + 60
    while True:
        try:
            get(port, "/hello/", timeout=2)
            return port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def proxied(fleet_factory: FleetStack) -> ServiceProcess:
    """An interface trusting loopback as its proxy, with a worker."""
    iface, _ = fleet_factory.start(workers=1, CHANNELS_FLEET_FORWARDED_ALLOW_IPS="127.0.0.1")
    return iface


async def test_forwarded_for_port_and_proto__the_scope_daphne_gives(
        proxied: ServiceProcess, daphne_port: int) -> None:
    status, body, _ = get(proxied.port, "/scope/", FORWARDED)
    ours = json.loads(body)
    _, body, _ = get(daphne_port, "/scope/", FORWARDED)
    daphne = json.loads(body)
    assert status == 200
    assert ours["client"] == daphne["client"] == ["10.1.2.3", 80]
    assert ours["types"] == daphne["types"] == ["list", "list"]
    assert ours["scheme"] == daphne["scheme"] == "https"
    ours_ws = await ws_whoami(proxied.port, FORWARDED)
    daphne_ws = await ws_whoami(daphne_port, FORWARDED)
    assert ours_ws["client"] == daphne_ws["client"] == ["10.1.2.3", 80]
    assert ours_ws["types"] == daphne_ws["types"] == ["list", "list"]
    assert ours_ws["scheme"] == "wss"  # Daphne leaves scheme out of a WebSocket scope


async def test_forwarded_headers_of_an_untrusted_peer__ignored(
        fleet_factory: FleetStack, proxied: ServiceProcess) -> None:
    direct = fleet_factory.interface()  # trusts no proxy; the worker above serves it too
    _, body, _ = get(direct.port, "/scope/", FORWARDED)
    seen = json.loads(body)
    assert seen["client"][0] == "127.0.0.1" and seen["client"][1] != 80
    assert (seen["scheme"], seen["types"]) == ("http", ["list", "list"])
    direct.stop()


@pytest.fixture(scope="module")
def timed(fleet_factory: FleetStack, proxied: ServiceProcess) -> ServiceProcess:
    """An interface with CHANNELS_FLEET_HTTP_TIMEOUT=2 (the worker above serves it)."""
    return fleet_factory.interface(CHANNELS_FLEET_HTTP_TIMEOUT="2")


def recorded(fleet_factory: FleetStack, key: str, timeout: float = 15) -> str:
    redis = RedisCluster.from_url(fleet_factory.env["CHANNELS_FLEET_REDIS_URL"].split(",")[0])
    deadline = time.monotonic() + timeout
    try:
        while not (got := redis.lrange(key, 0, -1)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return ",".join(v.decode() for v in got)
    finally:
        redis.close()


def test_http_timeout__no_response_in_time_is_503_and_the_app_told(
        fleet_factory: FleetStack, timed: ServiceProcess) -> None:
    status, body, took = get(timed.port, "/hold/?late")
    assert status == 503 and b"Application failed to respond within time limit." in body
    assert 2 <= took < 6  # checked every 2 s, as Daphne checks
    assert recorded(fleet_factory, "split:hold:late").startswith("http.disconnect after ")


def test_http_timeout__a_begun_response_is_ended_and_the_app_told(
        fleet_factory: FleetStack, timed: ServiceProcess) -> None:
    status, body, took = get(timed.port, "/hold/?start")
    assert (status, body) == (200, b"begun\n")
    assert 2 <= took < 6
    assert recorded(fleet_factory, "split:hold:start").startswith("http.disconnect after ")


def test_http_timeout__off_by_default(fleet_factory: FleetStack,
                                      proxied: ServiceProcess) -> None:
    status, body, took = get(proxied.port, "/slow/?5")
    assert (status, body) == (200, b"late") and took >= 5
