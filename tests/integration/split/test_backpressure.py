"""Backpressure at the edge: no worker in time -> 1013 / 503; a full work queue -> 1013 / 503.

Runs an interface with no worker at all (module fixtures of the other modules are gone by
then), ``CHANNELS_FLEET_CONNECT_CAPACITY=1`` and a 1.5 s claim timeout.
"""

from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from channels_fleet.dev.stack import FleetStack, ServiceProcess

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def lonely_interface(fleet_factory: FleetStack) -> Iterator[ServiceProcess]:
    redis = RedisCluster.from_url(fleet_factory.env["CHANNELS_FLEET_REDIS_URL"].split(",")[0])
    redis.delete("fleet:q:{fleet.connect}")
    redis.close()
    yield fleet_factory.interface(
        CHANNELS_FLEET_CONNECT_CAPACITY="1", CHANNELS_FLEET_CLAIM_TIMEOUT="1.5"
    )


async def close_code_and_time(proc: ServiceProcess) -> tuple[int | None, float]:
    started = time.monotonic()
    async with connect(proc.url + "/ws/echo/x/", origin=proc.origin, open_timeout=10) as sock:
        try:
            await asyncio.wait_for(sock.recv(), 10)
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd else None), time.monotonic() - started
    return None, time.monotonic() - started


async def test_unclaimed_connect__closed_1013_after_claim_timeout(
        lonely_interface: ServiceProcess) -> None:
    code, elapsed = await close_code_and_time(lonely_interface)
    assert code == 1013
    assert 1.4 < elapsed < 4


async def test_full_work_queue__channel_full_closes_1013_at_once(
        lonely_interface: ServiceProcess) -> None:
    # The first test's envelope still fills the one-slot queue: ChannelFull on send.
    code, elapsed = await close_code_and_time(lonely_interface)
    assert code == 1013
    assert elapsed < 1.0


def test_full_work_queue__http_503(lonely_interface: ServiceProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", lonely_interface.port, timeout=10)
    conn.request("GET", "/hello/")
    resp = conn.getresponse()
    assert resp.status == 503
    assert resp.getheader("retry-after") == "1"
    assert b"Traceback" not in resp.read()
    conn.close()
