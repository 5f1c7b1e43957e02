"""Liveness and drain of the split on a real Redis Cluster: kill -9 and SIGTERM of each side."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster
from support.split import wait_records
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from channels_fleet.dev.stack import FleetStack, ServiceProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def redis(fleet_factory: FleetStack) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(fleet_factory.env["CHANNELS_FLEET_REDIS_URL"].split(",")[0])
    yield client
    client.close()


@pytest.fixture
def fleet(fleet_factory: FleetStack) -> Iterator[FleetStack]:
    """Each test starts its own processes; none outlives it (kill -9 at teardown).

    With CHANNELS_FLEET_REHOME=off: a worker that drains or dies closes its sockets with 1012
    (the fallback tested here; re-homing, the default, is tested in tests/integration/rehome).
    """
    fleet_factory.env["CHANNELS_FLEET_REHOME"] = "off"
    try:
        yield fleet_factory
    finally:
        fleet_factory.stop()
        fleet_factory.env.pop("CHANNELS_FLEET_REHOME", None)


def ws(proc: ServiceProcess, path: str) -> Any:
    return connect(proc.url + path, origin=proc.origin, open_timeout=10)


async def owner_pid(sock: Any) -> int:
    await sock.send("whoami")
    return int(json.loads(await sock.recv())["worker"])


async def closed_code(sock: Any, timeout: float) -> int | None:
    try:
        await asyncio.wait_for(sock.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006
    return None


async def open_rooms(proc: ServiceProcess, room: str, count: int) -> list[Any]:
    socks = [await ws(proc, f"/ws/room/{room}/?c{i}").__aenter__() for i in range(count)]
    await socks[0].send("joined?")  # one broadcast round trip: every consumer has joined
    await asyncio.gather(*(asyncio.wait_for(s.recv(), 5) for s in socks))
    return socks


async def test_worker_kill9__its_sockets_close_1012_within_5s__others_undisturbed(
    fleet: FleetStack,
) -> None:
    iface, (victim, survivor) = fleet.start(workers=2)
    socks: dict[Any, int] = {}
    while len(set(socks.values())) < 2 or len(socks) < 20:
        sock = await ws(iface, "/ws/echo/k/").__aenter__()
        socks[sock] = await owner_pid(sock)
        assert len(socks) < 200, "connections never reached both workers"
    victim.popen.kill()
    started = time.monotonic()
    victims = [s for s, pid in socks.items() if pid == victim.pid]
    codes = await asyncio.gather(*(closed_code(s, 6) for s in victims))
    elapsed = time.monotonic() - started
    assert codes == [1012] * len(victims)
    assert elapsed < 5.0
    for sock, pid in socks.items():
        if pid == survivor.pid:
            await sock.send("still here")
            assert await asyncio.wait_for(sock.recv(), 5) == "still here"
            await sock.close()


def test_worker_kill9__its_http_request_in_flight_gets_503(fleet: FleetStack) -> None:
    iface, (worker,) = fleet.start()
    conn = http.client.HTTPConnection("127.0.0.1", iface.port, timeout=10)
    conn.request("GET", "/slow/")
    time.sleep(1)  # claimed and running on the worker
    worker.popen.kill()
    started = time.monotonic()
    resp = conn.getresponse()
    assert resp.status == 503
    assert time.monotonic() - started < 5.0
    assert b"Traceback" not in resp.read()
    conn.close()


async def test_worker_kill9__a_connect_it_took_unclaimed_is_sent_again(
        fleet: FleetStack, redis: RedisCluster) -> None:
    """A worker that dies between taking a connect envelope and claiming it takes the
    envelope along. Made certain here: the worker is stopped while blocked on the work queue,
    so Redis hands it the next envelope, which it never claims; then it is killed. Once its
    death is known the connect goes out again at the claim deadline and a live worker serves
    it (it used to be refused with 1013)."""
    iface = fleet.interface(wait=False, CHANNELS_FLEET_CLAIM_TIMEOUT="6")
    victim = fleet.worker()
    iface.wait_ready()
    async with ws(iface, "/ws/echo/owned/") as owned:  # the interface now watches the victim
        assert await owner_pid(owned) == victim.pid
        victim.popen.send_signal(signal.SIGSTOP)
        pending = asyncio.ensure_future(ws(iface, "/ws/echo/orphan/").__aenter__())
        await asyncio.sleep(0.5)
        assert redis.llen("fleet:q:{fleet.connect}") == 0  # handed to the stopped worker
        victim.popen.kill()
        survivor = fleet.worker()
        orphan = await asyncio.wait_for(pending, 15)
        assert await owner_pid(orphan) == survivor.pid
        await orphan.close()


async def test_interface_kill9__worker_runs_disconnect_handlers_within_5s(
    fleet: FleetStack, redis: RedisCluster
) -> None:
    iface, _ = fleet.start()
    room = f"ikill{time.monotonic_ns()}"
    await open_rooms(iface, room, 10)
    assert redis.lrange(f"split:disconnects:{room}", 0, -1) == []
    iface.popen.kill()
    started = time.monotonic()
    records = wait_records(redis, room, 10, 6)
    assert time.monotonic() - started < 5.0
    assert sorted(records) == sorted(f"c{i}:1006" for i in range(10))


async def test_worker_sigterm__sockets_closed_1012_and_disconnect_handlers_ran(
    fleet: FleetStack, redis: RedisCluster
) -> None:
    iface, (worker,) = fleet.start()
    room = f"wterm{time.monotonic_ns()}"
    socks = await open_rooms(iface, room, 5)
    worker.signal(signal.SIGTERM)
    codes = await asyncio.gather(*(closed_code(s, 5) for s in socks))
    assert codes == [1012] * 5
    assert sorted(wait_records(redis, room, 5, 5)) == sorted(f"c{i}:1012" for i in range(5))
    assert worker.popen.wait(timeout=8) == 0


def test_worker_sigterm__http_request_in_flight_finishes(fleet: FleetStack) -> None:
    iface, (worker,) = fleet.start()
    conn = http.client.HTTPConnection("127.0.0.1", iface.port, timeout=10)
    conn.request("GET", "/slow/?2")
    time.sleep(0.5)
    worker.signal(signal.SIGTERM)
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"late")
    conn.close()
    assert worker.popen.wait(timeout=8) == 0


async def test_interface_sigterm__sockets_closed_1001_and_owners_told(
    fleet: FleetStack, redis: RedisCluster
) -> None:
    iface, _ = fleet.start()
    room = f"iterm{time.monotonic_ns()}"
    socks = await open_rooms(iface, room, 5)
    iface.signal(signal.SIGTERM)
    codes = await asyncio.gather(*(closed_code(s, 5) for s in socks))
    assert codes == [1001] * 5
    assert sorted(wait_records(redis, room, 5, 5)) == sorted(f"c{i}:1001" for i in range(5))
    assert iface.popen.wait(timeout=8) == 0


async def test_worker_sigstop__declared_dead_then_abandons_its_connections_on_wake(
    fleet: FleetStack, redis: RedisCluster
) -> None:
    iface, (worker,) = fleet.start()
    room = f"stop{time.monotonic_ns()}"
    socks = await open_rooms(iface, room, 3)
    worker.signal(signal.SIGSTOP)
    try:
        codes = await asyncio.gather(*(closed_code(s, 6) for s in socks))
        assert codes == [1012] * 3
        assert redis.lrange(f"split:disconnects:{room}", 0, -1) == []  # it is frozen
    finally:
        worker.signal(signal.SIGCONT)
    # Awake, it finds its heartbeat gone: the connections are not its own any more. It runs
    # their disconnect handlers (1006) and carries on serving new connections.
    assert sorted(wait_records(redis, room, 3, 5)) == sorted(f"c{i}:1006" for i in range(3))
    async with ws(iface, "/ws/echo/again/") as sock:
        assert await owner_pid(sock) == worker.pid


async def test_worker_concurrency__a_full_worker_takes_no_new_connection(fleet: FleetStack) -> None:
    iface = fleet.interface(wait=False, CHANNELS_FLEET_CLAIM_TIMEOUT="2")
    worker = fleet.worker("--concurrency", "1")
    iface.wait_ready()
    async with ws(iface, "/ws/echo/first/") as first:
        assert await owner_pid(first) == worker.pid
        async with ws(iface, "/ws/echo/second/") as second:
            assert await closed_code(second, 6) == 1013  # nobody with room claimed it
    # Room again once the first ended, as soon as the worker's heartbeat says so: until then
    # the interface, seeing every worker full, refuses at once (test_workers_full.py).
    deadline = time.monotonic() + 5
    while True:
        async with ws(iface, "/ws/echo/third/") as third:
            try:
                assert await owner_pid(third) == worker.pid
                break
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == 1013
                assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    # A graceful stop takes its heartbeat away: killed at teardown, it would stay listed as a
    # full worker for the TTL, and the next test's new interface would refuse its first connect.
    assert worker.terminate_and_wait() == 0


async def test_client_not_reading__disconnected_not_buffered(
    fleet: FleetStack, redis: RedisCluster
) -> None:
    iface = fleet.interface(wait=False, CHANNELS_FLEET_SEND_BUFFER="262144")
    fleet.worker()
    iface.wait_ready()
    tag = f"flood{time.monotonic_ns()}"
    sock = await connect(f"{iface.url}/ws/flood/?{tag}", origin=iface.origin, max_queue=4)
    await sock.send("go")  # and never read: the app's 32 MB must not pile up on the interface
    records = wait_records(redis, tag, 1, 15)
    assert records == ["1006"]
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(sock.recv(), 5)
