"""Re-homing: a WebSocket outlives the worker that served it (drain, kill -9, SIGSTOP), and an
interface's stall (SIGSTOP past its heartbeat's TTL).

Real interface and worker processes on the real Redis Cluster, driven by ``websockets``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import time

import pytest
from support.rolling import OPEN, Probe, open_probes, rolling_restart, settle
from support.scrape import metric
from websockets.asyncio.client import connect

from channels_fleet.dev.stack import FleetStack, ServiceProcess

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


async def on_worker(iface: ServiceProcess, pid: int, count: int, path: str = "/ws/echo/rehome/",
                    others: list[Probe] | None = None) -> list[Probe]:
    """``count`` probes owned by worker ``pid`` (others opened on the way are kept aside)."""
    mine: list[Probe] = []
    while len(mine) < count:
        probes, _ = await open_probes(iface, 4, path)
        for probe in probes:
            owner = int((await probe.ask_owner())["worker"])
            (mine if owner == pid else others if others is not None else []).append(probe)
        assert len(mine) + len(others or []) < 400, "connections never reached the worker"
    return mine


async def test_worker_sigterm__sockets_stay_open_and_the_app_restarts_on_another_worker(
    fleet: FleetStack,
) -> None:
    iface, (old,) = fleet.start()
    room = f"rh{time.monotonic_ns()}"
    members = [await connect(f"{iface.url}/ws/room/{room}/?m{i}", origin=iface.origin)
               for i in range(5)]
    OPEN.extend(members)
    probes, _ = await open_probes(iface, 10)
    for probe in probes:
        await probe.send_next()
    new = fleet.worker()
    old.signal(signal.SIGTERM)
    for probe in probes:  # frames sent during the hand-over are held, then answered in order
        await probe.send_next()
    assert await asyncio.to_thread(old.popen.wait, 10) == 0
    await settle(probes, 10)
    for probe in probes:
        info = await probe.ask_owner()
        assert (info["worker"], info["fleet"]["rehomed"]) == (new.pid, 1)
        assert (probe.code, probe.lost, probe.out_of_order) == (None, 0, 0)
    # The room's consumers ran connect again on the new worker: they are back in the group
    # (each answers from the new worker only once its connect, and so its group_add, ran).
    for sock in members:
        await sock.send("whoami")
        assert json.loads(await asyncio.wait_for(sock.recv(), 10))["worker"] == new.pid
    await members[0].send("after")
    for sock in members:
        assert await asyncio.wait_for(sock.recv(), 5) == "after"
    assert metric(iface, "channels_fleet_rehomes_total", cause="drain") == 15
    assert metric(iface, "channels_fleet_rehome_gap_seconds_count") == 15
    assert metric(iface, "channels_fleet_closes_total") == 0


async def test_refused_on_rehome__only_those_sockets_close_with_the_apps_code(
    fleet: FleetStack,
) -> None:
    iface, (old,) = fleet.start()
    keep, _ = await open_probes(iface, 5)
    coded, _ = await open_probes(iface, 3, "/ws/norehome/?4003")
    plain, _ = await open_probes(iface, 3, "/ws/norehome/")
    for probe in [*keep, *coded, *plain]:  # all accepted on their first worker
        assert (await probe.ask_owner())["worker"] == old.pid
    new = fleet.worker()
    old.signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    while any(p.code is None for p in coded + plain) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert [p.code for p in coded] == [4003] * 3
    assert [p.code for p in plain] == [1008] * 3  # a refusal without a code: policy violation
    for probe in keep:
        assert (await probe.ask_owner())["worker"] == new.pid
        assert probe.code is None


async def test_worker_kill9__its_sockets_rehomed_within_5s_without_disconnects(
    fleet: FleetStack,
) -> None:
    iface, (victim, survivor) = fleet.start(workers=2)
    others: list[Probe] = []
    victims = await on_worker(iface, victim.pid, 20, others=others)
    victim.popen.kill()
    killed = time.monotonic()

    async def rehomed(probe: Probe) -> float:
        # Ask until the survivor answers: frames sent to the dead worker are replayed to it
        # (and counted); those sent after its death was noticed are held and answered.
        while True:
            await probe.sock.send("whoami")
            try:
                info = await asyncio.wait_for(probe.whoami.get(), 0.25)
            except TimeoutError:
                continue
            assert info["worker"] == survivor.pid
            assert info["fleet"]["rehomed"] == 1
            return time.monotonic() - killed

    took = await asyncio.wait_for(asyncio.gather(*(rehomed(p) for p in victims)), 15)
    print(f"kill -9: {len(victims)} sockets re-homed after {min(took):.2f}..{max(took):.2f}s")
    assert max(took) < 5.0, f"re-homed after {max(took):.1f}s"
    assert [p.code for p in victims + others] == [None] * (len(victims) + len(others))
    for probe in others:  # the survivor's own sockets were not touched
        info = await probe.ask_owner()
        assert (info["worker"], info["fleet"]["rehomed"]) == (survivor.pid, 0)
    assert metric(iface, "channels_fleet_rehomes_total", cause="dead") == len(victims)
    assert metric(iface, "channels_fleet_replayed_frames_total", cause="dead") > 0
    assert metric(iface, "channels_fleet_messages_dropped_total", reason="rehome_dead") == 0
    assert metric(iface, "channels_fleet_closes_total") == 0


async def test_worker_back_from_sigstop__does_not_act_on_sockets_rehomed_away(
    fleet: FleetStack,
) -> None:
    iface, (frozen, other) = fleet.start(workers=2)
    probes = await on_worker(iface, frozen.pid, 5, others=[])
    for probe in probes:
        probe.owners.clear()
    frozen.signal(signal.SIGSTOP)
    try:
        for probe in probes:  # relayed to the frozen worker: it will see them when woken
            await probe.sock.send("whoami")
        deadline = time.monotonic() + 10
        for probe in probes:
            while True:
                assert time.monotonic() < deadline, "not re-homed"
                await probe.sock.send("whoami")
                try:
                    info = await asyncio.wait_for(probe.whoami.get(), 0.25)
                except TimeoutError:
                    continue
                if info["worker"] == other.pid:
                    break
    finally:
        frozen.signal(signal.SIGCONT)
    # Awake, it answers the frames it had been sent: the interface ignores a non-owner.
    await asyncio.sleep(2)
    for probe in probes:
        assert frozen.pid not in probe.owners
        assert probe.code is None
        assert (await probe.ask_owner())["worker"] == other.pid
    async with connect(f"{iface.url}/ws/echo/again/", origin=iface.origin) as sock:
        await sock.send("still serving")
        assert await asyncio.wait_for(sock.recv(), 5) == "still serving"


async def stalled_past_the_ttl(stalled: ServiceProcess, iface: ServiceProcess,
                               count: int = 5) -> list[Probe]:
    """``count`` echo probes on ``iface``, each answered once; then ``stalled`` is SIGSTOPped
    past the heartbeat's TTL + half a beat (3.5 s: declared dead) while each probe sends one
    more frame, and woken; returns once every frame is echoed (or 20 s)."""
    probes, _ = await open_probes(iface, count)
    for probe in probes:
        await probe.send_next()
    await settle(probes, 10)
    stalled.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(5)
        for probe in probes:
            await probe.send_next()
    finally:
        stalled.signal(signal.SIGCONT)
    await settle(probes, 20)
    return probes


async def test_only_worker_back_from_sigstop__serves_its_sockets_again(fleet: FleetStack
                                                                      ) -> None:
    # Declared dead while stopped, the only worker wakes to the envelopes of its own sockets'
    # re-homes (taken by its pop before it stopped) and to a tombstone: the connections it
    # claims before its heartbeat learns it was declared dead are new claims, current at the
    # interface. Dropping them silently left those sockets open with no app behind them.
    iface, (worker,) = fleet.start()
    for probe in await stalled_past_the_ttl(worker, iface):
        info = await probe.ask_owner()
        assert info["worker"] == worker.pid
        assert (probe.code, probe.lost, probe.out_of_order) == (None, 0, 0)
    assert metric(iface, "channels_fleet_closes_total") == 0


async def test_interface_back_from_sigstop__its_sockets_are_rehomed_not_closed(
    fleet: FleetStack,
) -> None:
    # A stalled interface (CPU starvation, a pause) is declared dead by its workers, which drop
    # its connections; awake, it still holds the sockets (its frames held by the kernel until
    # it wakes): it re-homes them, losing no frame.
    iface, (worker,) = fleet.start()
    probes = await stalled_past_the_ttl(iface, iface)
    for probe in probes:
        info = await probe.ask_owner()
        assert (info["worker"], info["fleet"]["rehomed"]) == (worker.pid, 1)
        assert (probe.code, probe.lost, probe.out_of_order) == (None, 0, 0)
    assert metric(iface, "channels_fleet_rehomes_total", cause="dead") == len(probes)
    assert metric(iface, "channels_fleet_closes_total") == 0


async def test_no_live_worker__a_drained_socket_closes_1012_after_the_claim_deadline(
    fleet: FleetStack,
) -> None:
    iface = fleet.interface(wait=False, CHANNELS_FLEET_CLAIM_TIMEOUT="2")
    worker = fleet.worker()
    iface.wait_ready()
    (probe,), (reader,) = await open_probes(iface, 1)
    await probe.ask_owner()
    worker.signal(signal.SIGTERM)
    started = time.monotonic()
    await asyncio.wait_for(reader, 10)
    assert probe.code == 1012  # the client reconnects once a worker is back
    # A re-home waits twice the claim timeout (the client is connected and content to wait).
    assert 3.9 <= time.monotonic() - started < 8


async def test_rehome_off__a_draining_worker_closes_its_sockets_1012(fleet: FleetStack) -> None:
    iface = fleet.interface(wait=False)
    old = fleet.worker(CHANNELS_FLEET_REHOME="off")
    iface.wait_ready()
    probes, readers = await open_probes(iface, 3)
    fleet.worker()
    old.signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*readers), 10)
    assert [p.code for p in probes] == [1012] * 3


async def test_graphql_subprotocols_are_closed_1012_not_rehomed(fleet: FleetStack) -> None:
    """A GraphQL-over-WebSocket session (strawberry's GraphQLWSConsumer: connection_init once,
    then subscriptions in the app instance) cannot move: a new instance would wait for a
    connection_init the client never sends again while its subscriptions stay silent. Such
    sockets close with 1012 (the client reconnects and subscribes again), drain or kill -9;
    the others are re-homed."""
    iface, (old, other) = fleet.start(workers=2)
    probes: list[Probe] = []
    for proto in ("graphql-transport-ws", "graphql-ws"):
        opened, _ = await open_probes(iface, 4, subprotocols=[proto])
        probes += opened
    pinned = [p for p in probes if (await p.ask_owner())["worker"] == old.pid]
    plain = await on_worker(iface, old.pid, 2)
    assert pinned and all(p.sock.subprotocol for p in pinned)
    old.signal(signal.SIGTERM)
    assert await asyncio.to_thread(old.popen.wait, 10) == 0
    assert [p.code for p in pinned] == [1012] * len(pinned)
    for probe in plain:
        assert (await probe.ask_owner())["worker"] == other.pid and probe.code is None
    # The interface decides for a dead worker's sockets: every socket is on ``other`` now.
    victims, _ = await open_probes(iface, 3, subprotocols=["graphql-transport-ws"])
    victims += [p for p in probes if p.code is None]
    last = fleet.worker()
    other.popen.kill()
    deadline = time.monotonic() + 10
    while any(p.code is None for p in victims) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert [p.code for p in victims] == [1012] * len(victims)
    for probe in plain:
        assert (await probe.ask_owner())["worker"] == last.pid and probe.code is None


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_rolling_restart_of_3_workers__500_sockets__no_disconnect_no_loss_in_order(
    fleet: FleetStack,
) -> None:
    iface, workers = fleet.start(workers=3)
    result = await rolling_restart(fleet, iface, workers, 500)
    print(result.line(), f"frames={result.frames} seconds={result.seconds:.1f}")
    assert result.exit_codes == [0, 0, 0]
    assert result.disconnects == 0
    assert result.out_of_order == 0
    assert result.lost_frames == 0
    # Every socket answered afterwards, from one of the new workers.
    assert sum(result.owners_after.values()) == 500
    assert not set(result.owners_after) & result.old_pids
    assert metric(iface, "channels_fleet_rehomes_total", cause="drain") >= 500


async def test_drain_hands_sockets_back_in_batches_with_a_pause_between(fleet: FleetStack) -> None:
    iface = fleet.interface(wait=False)
    old = fleet.worker(CHANNELS_FLEET_REHOME_BATCH="5", CHANNELS_FLEET_REHOME_PAUSE="0.5")
    iface.wait_ready()
    probes, _ = await open_probes(iface, 20)
    for probe in probes:
        await probe.ask_owner()
    new = fleet.worker()
    old.signal(signal.SIGTERM)
    started = time.monotonic()

    async def moved(probe: Probe) -> float:
        while True:
            if (await probe.ask_owner())["worker"] == new.pid:
                return time.monotonic() - started
            await asyncio.sleep(0.05)

    took = sorted(await asyncio.wait_for(asyncio.gather(*(moved(p) for p in probes)), 20))
    # 4 batches of 5, 0.5 s apart: the last 5 cannot move before 3 pauses have passed (a
    # loaded machine only makes every move later).
    assert took[-1] >= 1.5 and sum(t < 1.5 for t in took) <= 15, took
    assert all(p.code is None for p in probes)


def test_http_in_flight__finishes_on_a_draining_worker__503_from_a_dead_one(
        fleet: FleetStack) -> None:
    """HTTP requests are not re-homed (the default re-home setting changes nothing for them)."""
    iface, (draining,) = fleet.start()
    conn = http.client.HTTPConnection("127.0.0.1", iface.port, timeout=15)
    conn.request("GET", "/slow/?2")
    time.sleep(0.5)  # claimed and running
    draining.signal(signal.SIGTERM)
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"late")
    conn.close()
    assert draining.popen.wait(timeout=10) == 0
    dying = fleet.worker()
    conn = http.client.HTTPConnection("127.0.0.1", iface.port, timeout=15)
    conn.request("GET", "/slow/")
    time.sleep(1)
    dying.popen.kill()
    resp = conn.getresponse()
    assert resp.status == 503 and b"Traceback" not in resp.read()
    conn.close()
