"""Scenarios 3 and 4: SIGTERM on an interface and on a worker; a worker cut off (SIGSTOP).

Interface SIGTERM: readiness false before any socket closes, new connections refused, 100% of
its sockets closed 1001 within the grace period, their disconnect handlers run in the workers.
Worker SIGTERM: no new connections taken, its sockets handed back (1012), exits 0 in time.
Worker SIGSTOP: its sockets closed 1012 by the interface; after SIGCONT it runs their
disconnect handlers (1006) without sending anything for them, and serves new ones.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster
from relfigures import Figures
from relload import whoami, ws
from support.split import wait_records
from websockets.exceptions import ConnectionClosed

from channels_fleet.dev.stack import FleetStack, ServiceProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(120)]

COUNT = 100
DRAIN = 8.0  # CHANNELS_FLEET_DRAIN_TIMEOUT of the split fleet


@pytest.fixture(scope="module")
def redis(rel_fleet: FleetStack) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(rel_fleet.env["CHANNELS_FLEET_REDIS_URL"].split(",")[0])
    yield client
    client.close()


async def open_room(proc: ServiceProcess, room: str, count: int) -> list[Any]:
    socks: list[Any] = []
    for start in range(0, count, 50):
        socks += await asyncio.gather(*(ws(proc, f"/ws/room/{room}/?c{i}").__aenter__()
                                        for i in range(start, min(count, start + 50))))
    await socks[0].send("joined?")  # one broadcast round trip: every consumer has joined
    await asyncio.gather(*(asyncio.wait_for(s.recv(), 20) for s in socks))
    return socks


async def close_info(sock: Any, timeout: float) -> tuple[int | None, float]:
    try:
        while True:
            await asyncio.wait_for(sock.recv(), timeout)
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else 1006), time.monotonic()
    except TimeoutError:
        return None, time.monotonic()


def ready_status(proc: ServiceProcess) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/readyz",
                                    timeout=0.5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def test_interface_sigterm__unready_refuses_closes_1001_disconnects_run(
    fleet: FleetStack, redis: RedisCluster, figures: Figures
) -> None:
    iface, workers = fleet.start(workers=2)
    room = f"riterm{time.monotonic_ns()}"
    socks = await open_room(iface, room, COUNT)
    unready_at: float | None = None
    refused_at: float | None = None

    async def watch_probe() -> None:
        nonlocal unready_at, refused_at
        while unready_at is None or refused_at is None:
            if unready_at is None and ready_status(iface) != 200:
                unready_at = time.monotonic()
            if refused_at is None and not port_open(iface.port):
                refused_at = time.monotonic()
            await asyncio.sleep(0.005)

    closes = [asyncio.create_task(close_info(s, DRAIN + 2)) for s in socks]
    watcher = asyncio.create_task(watch_probe())
    sent = time.monotonic()
    iface.signal(signal.SIGTERM)
    results = await asyncio.gather(*closes)
    try:
        await asyncio.wait_for(watcher, 3)
    except TimeoutError:
        pass
    codes = [code for code, _ in results]
    first_close = min(t for _, t in results)
    last_close = max(t for _, t in results)
    handlers = wait_records(redis, room, COUNT, 10)
    exit_code = iface.popen.wait(timeout=DRAIN + 2)
    exited = time.monotonic() - sent

    unready_first = unready_at is not None and unready_at <= first_close
    ok_codes = codes.count(1001) == COUNT and last_close - sent <= DRAIN
    ok_handlers = sorted(handlers) == sorted(f"c{i}:1001" for i in range(COUNT))
    run = (f"{COUNT} room sockets on 1 interface (2 workers), SIGTERM to the interface "
           f"(CHANNELS_FLEET_DRAIN_TIMEOUT={DRAIN:.0f})")
    figures.record("3. SIGTERM interface", run,
                   "/readyz answer vs first close; public port refusing connections",
                   f"unready {((unready_at or 0) - sent) * 1000:.0f} ms after SIGTERM, first "
                   f"close at {(first_close - sent) * 1000:.0f} ms; port refusing "
                   f"{((refused_at or 0) - sent) * 1000:.0f} ms after SIGTERM",
                   unready_first and refused_at is not None)
    figures.record("3. SIGTERM interface", run, "close codes; disconnect handlers run (Redis)",
                   f"{codes.count(1001)}/{COUNT} closed 1001 within "
                   f"{(last_close - sent):.2f} s; {len(handlers)}/{COUNT} handlers ran with "
                   f"1001; exit {exit_code} after {exited:.2f} s",
                   ok_codes and ok_handlers and exit_code == 0)
    assert unready_first, (unready_at, first_close)
    assert refused_at is not None
    assert ok_codes, codes
    assert ok_handlers, handlers
    assert exit_code == 0


async def test_worker_sigterm__takes_nothing_new_hands_back_1012_exits_in_time(
    fleet: FleetStack, redis: RedisCluster, figures: Figures
) -> None:
    iface, (victim,) = fleet.start(CHANNELS_FLEET_REHOME="off")
    room = f"rwterm{time.monotonic_ns()}"
    socks = await open_room(iface, room, COUNT)
    other = fleet.worker(CHANNELS_FLEET_REHOME="off")  # only now: the victim owns them all
    closes = [asyncio.create_task(close_info(s, DRAIN + 2)) for s in socks]
    sent = time.monotonic()
    victim.signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    # New connections while it drains: all go to the other worker.
    owners = []
    for i in range(10):
        async with ws(iface, f"/ws/echo/new{i}/") as sock:
            owners.append(await whoami(sock))
    results = await asyncio.gather(*closes)
    codes = [code for code, _ in results]
    last_close = max(t for _, t in results) - sent
    exit_code = victim.popen.wait(timeout=DRAIN + 2)
    exited = time.monotonic() - sent
    handlers = wait_records(redis, room, COUNT, 5)
    ok = (codes.count(1012) == COUNT and owners.count(other.pid) == 10 and exit_code == 0
          and exited <= DRAIN and sorted(handlers) == sorted(f"c{i}:1012" for i in range(COUNT)))
    figures.record(
        "3. SIGTERM worker",
        f"{COUNT} room sockets owned by one worker, SIGTERM to it, 10 new connects during the "
        f"drain, CHANNELS_FLEET_REHOME=off",
        "close codes, disconnect handlers, owner of the new connects, exit status and time",
        f"{codes.count(1012)}/{COUNT} closed 1012 within {last_close:.2f} s; "
        f"{len(handlers)} handlers ran; {owners.count(other.pid)}/10 new connects on the other "
        f"worker; exit {exit_code} after {exited:.2f} s (limit {DRAIN:.0f} s)", ok)
    assert codes.count(1012) == COUNT, codes
    assert owners.count(other.pid) == 10
    assert exit_code == 0 and exited <= DRAIN
    assert sorted(handlers) == sorted(f"c{i}:1012" for i in range(COUNT))


def metric(proc: ServiceProcess, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics",
                                    timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_worker_sigstop__closed_1012__on_wake_serves_nothing_it_lost(
    fleet: FleetStack, redis: RedisCluster, figures: Figures
) -> None:
    iface, (frozen,) = fleet.start(CHANNELS_FLEET_REHOME="off")
    room = f"rstop{time.monotonic_ns()}"
    socks = await open_room(iface, room, 20)
    other = fleet.worker(CHANNELS_FLEET_REHOME="off")
    watcher = None
    for i in range(20):  # a watcher socket owned by the other worker
        sock = await ws(iface, f"/ws/room/{room}/?w{i}").__aenter__()
        if await whoami(sock) == other.pid:
            watcher = sock
            break
        await sock.close()
    assert watcher is not None
    async with watcher:
        closes = [asyncio.create_task(close_info(s, 8)) for s in socks]
        stopped = time.monotonic()
        frozen.signal(signal.SIGSTOP)
        try:
            results = await asyncio.gather(*closes)
            frozen_records = [v for v in redis.lrange(f"split:disconnects:{room}", 0, -1)
                              if v.startswith(b"c")]
            # A broadcast to the room while the frozen worker's consumers are still members.
            await watcher.send("while-frozen")
            assert await asyncio.wait_for(watcher.recv(), 5) == "while-frozen"
        finally:
            frozen.signal(signal.SIGCONT)
        woke = time.monotonic()
        handlers = [r for r in wait_records(redis, room, 20 + i, 8) if r.startswith("c")]
        woke_handlers = time.monotonic() - woke
        # Awake: it relays nothing for the lost sockets; the watcher sees only its own traffic.
        await watcher.send("after-wake")
        seen = [await asyncio.wait_for(watcher.recv(), 5)]
        try:
            seen.append(await asyncio.wait_for(watcher.recv(), 1.5))
        except TimeoutError:
            pass
    owned_after = metric(frozen, "channels_fleet_owned_connections")
    async with ws(iface, "/ws/echo/again/") as sock:
        pids = {await whoami(sock)}
    codes = [code for code, _ in results]
    worst = max(t for _, t in results) - stopped
    ok = (codes.count(1012) == 20 and worst <= 5.0 and frozen_records == []
          and sorted(handlers) == sorted(f"c{i}:1006" for i in range(20))
          and seen == ["after-wake"] and owned_after == 0)
    figures.record(
        "4. worker cut off (SIGSTOP / SIGCONT)",
        "20 room sockets owned by one worker, SIGSTOP for the time the interface takes to "
        "close them, then SIGCONT; a watcher socket on another worker",
        "close codes and time; what the woken worker does",
        f"{codes.count(1012)}/20 closed 1012 within {worst:.2f} s of SIGSTOP; on wake "
        f"{len(handlers)}/20 disconnect handlers ran (1006) in {woke_handlers:.2f} s, "
        f"0 frames relayed for lost sockets ({len(seen) - 1} extra seen), owned_connections="
        f"{owned_after}, new connects served by {'it or the other' if pids else '-'}", ok)
    assert codes == [1012] * 20, codes
    assert worst <= 5.0
    assert frozen_records == []
    assert sorted(handlers) == sorted(f"c{i}:1006" for i in range(20))
    assert seen == ["after-wake"]
    assert owned_after == 0
    assert pids <= {frozen.pid, other.pid}


async def test_interface_sigterm__closes_paced_at_drain_close_rate(fleet: FleetStack) -> None:
    """60 sockets at 40 closes/s: the 1001s spread over about 1.5 s, none before SIGTERM's
    unready step, every one a 1001 (the clients reconnect as a stream, not one burst)."""
    iface = fleet.interface(CHANNELS_FLEET_DRAIN_CLOSE_RATE="40")
    fleet.worker()
    fleet.wait_ready()
    socks = await open_room(iface, f"pace{time.monotonic_ns()}", 60)
    closes = [asyncio.create_task(close_info(s, DRAIN + 2)) for s in socks]
    iface.signal(signal.SIGTERM)
    results = await asyncio.gather(*closes)
    times = sorted(t for _, t in results)
    spread = times[-1] - times[0]
    print(f"60 sockets, CHANNELS_FLEET_DRAIN_CLOSE_RATE=40: 1001s spread over {spread:.2f} s")
    assert [code for code, _ in results] == [1001] * 60
    assert 1.1 <= spread <= DRAIN
