"""Every worker at its --concurrency cap (for a heartbeat interval): a new connection is refused
at once, not after the claim timeout; once a worker frees a slot (its next heartbeat says so)
connections are taken again. A storm far beyond the fleet's room gets 1013 at the edge, each
refusal counted on the interface, none left waiting longer than the claim timeout.

One interface and 2 workers at ``--concurrency 2`` (their own key prefix, so nothing else on
the shared cluster counts), the default 5 s claim timeout; for the storm a second interface
on the same workers whose work queue holds 5 envelopes (``CHANNELS_FLEET_CONNECT_CAPACITY``).
"""

from __future__ import annotations

import asyncio
import http.client
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from channels_fleet import fleet_status
from channels_fleet.dev.stack import FleetStack, ServiceProcess

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

PREFIX = "fullfleet"
CLAIM_TIMEOUT = 5.0
QUEUE_CAPACITY = 5
STORM = 60
ENV = {"CHANNELS_FLEET_KEY_PREFIX": PREFIX, "CHANNELS_FLEET_CLAIM_TIMEOUT": str(CLAIM_TIMEOUT)}


@pytest.fixture(scope="module")
def full_fleet(fleet_factory: FleetStack) -> Iterator[tuple[ServiceProcess, str]]:
    """The interface, and the Redis URL to read the fleet's status from."""
    iface = fleet_factory.interface(wait=False, **ENV)
    workers = [fleet_factory.worker("--concurrency", "2", wait=False, **ENV) for _ in range(2)]
    fleet_factory.wait_ready(iface, *workers)
    yield iface, fleet_factory.env["CHANNELS_FLEET_REDIS_URL"].split(",")[0]


@pytest.fixture(scope="module")
def small_queue(fleet_factory: FleetStack, full_fleet: tuple[ServiceProcess, str]
                ) -> ServiceProcess:
    """A second interface on the same 2 workers, its work queue capped at 5 envelopes."""
    return fleet_factory.interface(CHANNELS_FLEET_CONNECT_CAPACITY=str(QUEUE_CAPACITY), **ENV)


async def echo_socket(iface: ServiceProcess) -> ClientConnection:
    sock = await connect(iface.url + "/ws/echo/full/", origin=iface.origin, open_timeout=10)
    await sock.send("ping")
    assert await asyncio.wait_for(sock.recv(), 10) == "ping"
    return sock


async def refused(iface: ServiceProcess) -> tuple[int | None, float]:
    """A new WebSocket's close code and how long it took."""
    started = time.monotonic()
    async with connect(iface.url + "/ws/echo/full/", origin=iface.origin,
                       open_timeout=10) as sock:
        try:
            await asyncio.wait_for(sock.recv(), 10)
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd else None), time.monotonic() - started
    return None, time.monotonic() - started


async def workers_report(url: str, owned: list[int], full: int, timeout: float = 10) -> None:
    """Wait until the workers' heartbeats report ``owned`` connections (sorted) and ``full``
    of them full for a second (a beat: what the interface counts as full)."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        fleet = await asyncio.to_thread(fleet_status, url, prefix=PREFIX)
        workers = [p for p in fleet["processes"] if p["kind"] == "worker"]
        seen = (sorted(p["sockets"] for p in workers), sum(p["full_for"] >= 1 for p in workers))
        if seen == (owned, full):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"workers report {seen}, expected {owned, full}")


def metric(iface: ServiceProcess, name: str, label: str, value: str) -> float:
    """One sample of the interface's /metrics (0 if absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{iface.metrics_port}/metrics") as resp:
        text = resp.read().decode()
    found = re.search(rf'^channels_fleet_{name}\{{{label}="{value}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def dropped(iface: ServiceProcess, reason: str) -> float:
    return metric(iface, "messages_dropped_total", "reason", reason)


REFUSALS = ("workers_full", "channel_full", "unclaimed")


async def storm_client(iface: ServiceProcess, served: list[ClientConnection]
                       ) -> tuple[str, float]:
    """Connect, send one frame: ("echo", s) if it came back (the socket is kept open, in
    ``served``, holding its worker's slot), ("close <code>", s) if refused."""
    started = time.monotonic()
    sock = await connect(iface.url + "/ws/echo/storm/", origin=iface.origin, open_timeout=20)
    try:
        await sock.send("ping")
        reply = await asyncio.wait_for(sock.recv(), 20)
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        return f"close {code}", time.monotonic() - started
    served.append(sock)
    return ("echo" if reply == "ping" else f"reply {reply!r}"), time.monotonic() - started


async def test_every_worker_full__refused_at_once__taken_again_when_a_slot_frees(
        full_fleet: tuple[ServiceProcess, str]) -> None:
    iface, url = full_fleet
    socks = [await echo_socket(iface) for _ in range(4)]  # 2 workers x 2: every slot taken
    try:
        await workers_report(url, [2, 2], full=2)
        await asyncio.sleep(0.6)  # the interface reads the heartbeats twice a second
        code, elapsed = await refused(iface)
        assert code == 1013
        assert elapsed < 1.5, f"refused after {elapsed:.1f}s: waited for the claim timeout"

        conn = http.client.HTTPConnection("127.0.0.1", iface.port, timeout=10)
        started = time.monotonic()
        conn.request("GET", "/hello/")
        resp = conn.getresponse()
        assert resp.status == 503 and time.monotonic() - started < 1.5
        conn.close()
        assert dropped(iface, "workers_full") >= 2  # counted on the interface

        # A slot frees; once the worker's heartbeat says so, a new socket is served.
        await socks.pop().close()
        await workers_report(url, [1, 2], full=1)
        await asyncio.sleep(0.6)
        socks.append(await echo_socket(iface))
    finally:
        for sock in socks:
            await sock.close()


async def test_storm_beyond_capacity__1013_at_the_edge__counted(
        full_fleet: tuple[ServiceProcess, str], small_queue: ServiceProcess) -> None:
    _, url = full_fleet
    await workers_report(url, [0, 0], full=0)  # the other test's sockets are gone
    before = {r: dropped(small_queue, r) for r in REFUSALS}
    closes_before = metric(small_queue, "closes_total", "code", "1013")

    served: list[ClientConnection] = []
    try:
        outcomes = await asyncio.gather(*(storm_client(small_queue, served)
                                          for _ in range(STORM)))
    finally:
        for sock in served:
            await sock.close()

    kinds = Counter(kind for kind, _ in outcomes)
    assert kinds == {"echo": 4, "close 1013": STORM - 4}, kinds  # 2 workers x 2: the room
    refusals = sorted(t for kind, t in outcomes if kind == "close 1013")
    # Nothing waits unbounded: at most the claim timeout (envelopes queued while the workers
    # filled), and most far less: refused at once, as the queue holds 5 (plus the 4 claimed).
    assert refusals[-1] < CLAIM_TIMEOUT + 3, refusals
    at_once = sum(t < 2.0 for t in refusals)
    assert at_once >= STORM - 4 - 2 * QUEUE_CAPACITY - 4, refusals
    # Every refusal is counted on the interface, by why.
    await asyncio.sleep(0.5)
    counted = {r: dropped(small_queue, r) - before[r] for r in REFUSALS}
    assert sum(counted.values()) == STORM - 4, counted
    assert counted["channel_full"] + counted["workers_full"] >= at_once, counted
    assert metric(small_queue, "closes_total", "code", "1013") - closes_before == STORM - 4
