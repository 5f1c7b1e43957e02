"""Scenario 2: a Redis master fails over under traffic (SIGKILL of a master with a replica).

The test runs its own 3-master + 3-replica cluster (not the session one), 1 interface and 2
workers with echo traffic, and kills the master that holds the heartbeats' slot ``{hb}`` (the
relay's process LISTs live on other slots, so this is the key every process needs every
second). Figures: time until a new connection is served and echoes flow again, with no
process restarted; messages lost and sockets closed in the window.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster
from relfigures import Figures, full_run
from relload import open_echoes, settle, whoami, ws
from support.split import split_stack

from channels_fleet.devcluster import LocalRedis

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(240)]

SOCKETS = 40
RATE = 10.0
# The heartbeats' slot (every process writes it every second) and the work queue's slot.
TARGETS = {"heartbeats": "fleet:hb:{hb}:x", "work queue": "fleet:q:{fleet.connect}"}


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalRedis]:
    local = LocalRedis(tmp_path / "cluster", masters=3, replicas=1).start()
    try:
        yield local
    finally:
        local.stop()


def cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=10).stdout


async def probe(iface: object) -> bool:
    try:
        async with ws(iface, "/ws/echo/probe/", open_timeout=3) as sock:  # type: ignore[arg-type]
            await sock.send("p")
            return await asyncio.wait_for(sock.recv(), 2) == "p"
    except Exception:
        return False


# make test: the heartbeats' slot (the one that used to disconnect everyone); both in the report.
@pytest.mark.parametrize("target", list(TARGETS) if full_run() else ["heartbeats"])
async def test_master_failover_under_traffic(own_cluster: LocalRedis, tmp_path: Path,
                                             figures: Figures, target: str) -> None:
    key = TARGETS[target]
    (tmp_path / "fleet").mkdir()
    fleet = split_stack(own_cluster.urls[:3], tmp_path / "fleet")
    try:
        iface, workers = fleet.start(workers=2)
        procs = [iface, *workers]
        client = RedisCluster.from_url(own_cluster.urls[0])
        port = client.get_node_from_key(key).port
        client.close()
        victim = next(n for n in own_cluster.nodes if n.port == port)

        echoes = await open_echoes(iface, SOCKETS)
        readers = [asyncio.create_task(e.reader()) for e in echoes]
        stop = asyncio.Event()
        pacers = [asyncio.create_task(e.pace(RATE, stop)) for e in echoes]
        await asyncio.sleep(2)
        before = [(e.sent, len(e.got)) for e in echoes]
        victim.kill()
        killed = time.monotonic()
        resumed = None
        while time.monotonic() - killed < 30:
            if await probe(iface):
                resumed = time.monotonic() - killed
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # traffic after the failover
        stop.set()
        await asyncio.gather(*pacers)
        await settle(echoes, 10)
        restarted = [f"{p.kind} {p.pid}" for p in procs if p.popen.poll() is not None]
        open_socks = [e for e in echoes if e.closed_at is None]
        closed = [e.code for e in echoes if e.closed_at is not None]
        lost_open = sum(e.lost for e in open_socks)
        sent_total = sum(e.sent for e in echoes)
        lost_closed = sum(e.lost for e in echoes if e.closed_at is not None)
        gap = max((e.max_gap(killed - 1) for e in open_socks), default=0.0)
        new_ok = await probe(iface)
        async with ws(iface, "/ws/echo/after/") as sock:
            await whoami(sock)
        for e in open_socks:
            await e.sock.close()
        await asyncio.gather(*readers)
        del before
    finally:
        fleet.stop()
    ok = resumed is not None and resumed <= 10 and not restarted and new_ok
    figures.record(
        "2. Redis master failover",
        f"own 3+3 cluster; 1 interface, 2 workers, {SOCKETS} sockets x {RATE:.0f} msg/s; "
        f"SIGKILL of the master holding the {target} ({key!r}), its replica promoted",
        "time until a new connection echoes again; processes restarted; messages lost",
        f"served again {resumed if resumed is None else round(resumed, 2)} s after the kill, "
        f"{len(restarted)} processes restarted; {len(closed)}/{SOCKETS} sockets closed "
        f"{sorted(set(closed))}; lost {lost_open} of the messages on sockets that stayed open "
        f"and {lost_closed} on closed ones, of {sent_total} sent; longest echo gap "
        f"{gap:.2f} s", ok and lost_open == 0 and not closed,
        resumed_s=resumed, lost_open=lost_open, closed=len(closed))
    assert resumed is not None and resumed <= 10, resumed
    assert not restarted, restarted
    assert new_ok
    assert not closed, closed
    assert lost_open == 0
