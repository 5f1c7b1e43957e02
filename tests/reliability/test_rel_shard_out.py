"""Scenario 2b: one Redis shard out does not take the fleet down.

The test runs its own cluster with ``cluster-require-full-coverage no`` on every node, laid out
so that one shard, the *lost* one, owns only a narrow band of slots around the heartbeats'
slot ``{hb}`` (every process writes its heartbeat there every second) and the group keys of
two chat rooms. Everything else (the work queue ``fleet.connect``, every process's inbox, four
more rooms) is on the other two shards; the test checks this before it breaks anything, and
starts the fleet again when a process's random name put its inbox on the lost shard.
1 interface and 2 workers of the split test project; 6 rooms (``/ws/room/<room>/``, a
group chat), 3 sockets each, one of them sending numbered messages the group broadcasts.

- failover: the lost shard has a replica; SIGKILL of its master (the replica takes over).
- stop: no replicas; SIGSTOP of its master for 20 s, then SIGCONT (no failover can happen).

Throughout, ``/readyz`` of the three processes is sampled every 0.5 s. Figures: readiness
answers that were not 200, messages lost or out of order and the longest pause of the rooms
on healthy shards, what became of the lost shard's rooms and how long until they served again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster
from relfigures import Figures
from relload import log_count, ws
from support.split import split_stack
from websockets.exceptions import ConnectionClosed

from channels_fleet.dev.cluster import DevClusterError, LocalRedis, RedisNode
from channels_fleet.dev.stack import FleetStack, ServiceProcess
from channels_fleet.layers.keys import channel_key, group_key, slot_of
from channels_fleet.relay.wire import CONNECT_QUEUE, heartbeat_key, queue_key

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(150)]

RATE = 5.0  # messages a second per room
PER_ROOM = 3  # sockets per room; the first one talks
APP_PREFIX = "splitproj"  # the split project's CHANNEL_LAYERS prefix
HB_SLOT = slot_of(heartbeat_key("x", "fleet"))
LOST = (HB_SLOT - 8, HB_SLOT + 8)  # every slot of the lost shard
STOP_SECONDS = 20.0
#: Longest pause a room on a healthy shard may take (about 0.2 s between its messages).
MAX_PAUSE = 3.0
SERVE_AGAIN_WITHIN = 15.0


def layout() -> list[list[tuple[int, int]]]:
    """Slot ranges of the three masters: the lost shard first."""
    lo, hi = LOST
    return [[(lo, hi)], [(0, lo - 1), (hi + 1, 8191)], [(8192, 16383)]]


def shard_of(slot: int) -> int:
    return next(i for i, ranges in enumerate(layout())
                if any(lo <= slot <= hi for lo, hi in ranges))


def rooms_by_shard(per_shard: int = 2) -> dict[int, list[str]]:
    """Room names whose group key lands on each shard."""
    found: dict[int, list[str]] = {0: [], 1: [], 2: []}
    n = 0
    while any(len(names) < per_shard for names in found.values()):
        name = f"room{n}"
        shard = shard_of(slot_of(group_key(APP_PREFIX, name)))
        if len(found[shard]) < per_shard:
            found[shard].append(name)
        n += 1
    return found


def cli(port: int, *args: str) -> str:
    done = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=10)
    return done.stdout.strip()


@dataclass
class ShardedRedis(LocalRedis):
    """A LocalRedis cluster whose masters own the given slot ranges (``layout``), each with
    ``replicas`` replicas; the shard of ``layout[0]`` gets ``first_replicas``."""

    layout: list[list[tuple[int, int]]] = field(default_factory=list)
    first_replicas: int = 0

    def node_count(self) -> int:
        return self.masters + self.first_replicas + self.replicas * (self.masters - 1)

    def _create_cluster(self) -> None:
        masters, rest = self.nodes[:self.masters], self.nodes[self.masters:]
        for epoch, (node, ranges) in enumerate(zip(masters, self.layout, strict=True), 1):
            cli(node.port, "cluster", "set-config-epoch", str(epoch))
            for lo, hi in ranges:
                cli(node.port, "cluster", "addslotsrange", str(lo), str(hi))
        for node in self.nodes[1:]:
            cli(node.port, "cluster", "meet", "127.0.0.1", str(self.nodes[0].port))
        ids = {node.port: cli(node.port, "cluster", "myid") for node in masters}
        owners = [masters[0]] * self.first_replicas + [
            m for m in masters[1:] for _ in range(self.replicas)]
        deadline = time.monotonic() + 30
        for node, owner in zip(rest, owners, strict=True):
            while cli(node.port, "cluster", "replicate", ids[owner.port]) != "OK":
                if time.monotonic() > deadline:
                    raise DevClusterError(f"{node.port} did not learn of {owner.port}")
                time.sleep(0.1)
        self.wait_cluster_ok()


@pytest.fixture(params=["failover", "stop"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster(tmp_path: Path, mode: str) -> Iterator[ShardedRedis]:
    local = ShardedRedis(tmp_path / "cluster", masters=3,
                         replicas=1 if mode == "failover" else 0,
                         config={"cluster-require-full-coverage": "no"},
                         layout=layout(), first_replicas=1 if mode == "failover" else 0)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def readyz(proc: ServiceProcess) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/readyz",
                                    timeout=1.5) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return None, repr(exc)


@dataclass
class Member:
    """One room socket: what it got (number, when) and how it closed."""

    room: str
    sock: Any
    worker: int = 0
    got: list[tuple[int, float]] = field(default_factory=list)
    code: int | None = None
    closed_at: float | None = None

    async def read(self) -> None:
        try:
            async for msg in self.sock:
                if isinstance(msg, str) and msg.isdigit():
                    self.got.append((int(msg), time.monotonic()))
        except ConnectionClosed:
            pass
        self.closed_at = time.monotonic()
        rcvd = self.sock.protocol.close_rcvd
        self.code = rcvd.code if rcvd is not None else 1006

    def numbers(self) -> list[int]:
        return [n for n, _ in self.got]

    def pause(self, since: float, until: float) -> float:
        """Longest time without a message between ``since`` and ``until``."""
        times = [since, *[t for _, t in self.got if since < t < until], until]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


@dataclass
class Room:
    name: str
    shard: int
    members: list[Member]
    sent: list[float] = field(default_factory=list)  # when each number was sent

    async def talk(self, stop: asyncio.Event) -> None:
        talker = self.members[0]
        next_at = time.monotonic()
        while not stop.is_set() and talker.closed_at is None:
            try:
                await talker.sock.send(str(len(self.sent)))
            except ConnectionClosed:
                return
            self.sent.append(time.monotonic())
            next_at += 1 / RATE
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            except TimeoutError:
                pass

    def first_after(self, moment: float) -> float | None:
        """When a number sent after ``moment`` first reached a member of this room."""
        later = {n for n, at in enumerate(self.sent) if at >= moment}
        times = [t for m in self.members for n, t in m.got if n in later]
        return min(times, default=None)


async def open_room(iface: ServiceProcess, name: str, shard: int, count: int) -> Room:
    socks = await asyncio.gather(*(ws(iface, f"/ws/room/{name}/?m{i}").__aenter__()
                                   for i in range(count)))
    members = []
    for sock in socks:
        await sock.send("whoami")
        worker = json.loads(await asyncio.wait_for(sock.recv(), 20))["worker"]
        members.append(Member(name, sock, worker))
    await socks[0].send("joined?")  # one broadcast: every member has joined the group
    await asyncio.gather(*(asyncio.wait_for(s.recv(), 20) for s in socks))
    return Room(name, shard, members)


async def serves(iface: ServiceProcess, room: str, timeout: float = 3.0) -> bool:
    """Does a new pair of sockets in ``room`` get a broadcast across?"""
    try:
        async with ws(iface, f"/ws/room/{room}/?probe", open_timeout=timeout) as a, \
                ws(iface, f"/ws/room/{room}/?probe", open_timeout=timeout) as b:
            await a.send("ping")
            for sock in (a, b):
                while await asyncio.wait_for(sock.recv(), timeout) != "ping":
                    pass
            return True
    except Exception:
        return False


def placement(client: RedisCluster, rooms: list[Room]) -> dict[str, int]:
    """The shard of every key a process serves from: relay inboxes, app-layer inboxes, the
    work queue."""
    keys = {"work queue": queue_key("fleet", CONNECT_QUEUE)}
    for key in client.scan_iter(match=heartbeat_key("*", "fleet"), count=1000):
        channel = key.decode().split(":", 3)[3]
        keys[f"relay inbox {channel}"] = channel_key("fleet", channel)
    for room in rooms:
        for member in client.zrange(group_key(APP_PREFIX, room.name), 0, -1):
            channel = member.decode()
            keys[f"app inbox {channel.split('!')[0]}"] = channel_key(APP_PREFIX, channel)
    return {what: shard_of(slot_of(key)) for what, key in keys.items()}


async def sample_readiness(procs: list[ServiceProcess], stop: asyncio.Event,
                           out: list[tuple[float, str, int | None, str]]) -> None:
    while not stop.is_set():
        at = time.monotonic()
        answers = await asyncio.gather(*(asyncio.to_thread(readyz, p) for p in procs))
        out += [(at, p.name, code, body) for p, (code, body) in zip(procs, answers, strict=True)]
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, at + 0.5 - time.monotonic()))
        except TimeoutError:
            pass


#: Fleets started until none of its processes' inboxes lands on the lost shard: its 17 slots
#: take one random name in about 1,000, so a start with six of them needs another about once
#: in 160.
LAYOUTS = 5


async def start_clear_of_the_lost_shard(fleet: FleetStack, client: RedisCluster,
                                        names: dict[int, list[str]]
                                        ) -> tuple[ServiceProcess, list[ServiceProcess],
                                                   list[Room]]:
    """Start the fleet and open the rooms, until every inbox and the work queue are on the
    healthy shards (process names are random: a new start draws new slots)."""
    for _ in range(LAYOUTS):
        iface, workers = fleet.start(workers=2)
        rooms = [await open_room(iface, name, shard, PER_ROOM)
                 for shard, room_names in names.items() for name in room_names]
        where = placement(client, rooms)
        on_lost = sorted(what for what, shard in where.items() if shard == 0)
        if not on_lost:
            assert sum(w.startswith("relay inbox") for w in where) == 3, where
            return iface, workers, rooms
        print(f"the layout put {on_lost} on the lost shard: starting the fleet again")
        for room in rooms:
            for member in room.members:
                await member.sock.close()
        fleet.stop()
        # What the stopped processes left: their heartbeats and their consumers' groups.
        beats = list(client.scan_iter(match=heartbeat_key("*", "fleet")))
        client.delete(*beats, *(group_key(APP_PREFIX, room.name) for room in rooms))
    raise AssertionError(f"{LAYOUTS} starts put an inbox on the lost shard")


async def test_one_shard_out__the_others_keep_serving(cluster: ShardedRedis, mode: str,
                                                      tmp_path: Path, figures: Figures) -> None:
    names = rooms_by_shard()
    client = RedisCluster.from_url(cluster.urls[0])
    lost_port = client.get_node_from_key(heartbeat_key("x", "fleet")).port
    victim = next(n for n in cluster.nodes if n.port == lost_port)
    (tmp_path / "fleet").mkdir()
    fleet = split_stack(cluster.urls[:3], tmp_path / "fleet")
    samples: list[tuple[float, str, int | None, str]] = []
    stop_talk, stop_sampling = asyncio.Event(), asyncio.Event()
    rooms: list[Room] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        iface, workers, rooms = await start_clear_of_the_lost_shard(fleet, client, names)
        procs = [iface, *workers]

        sampler = asyncio.create_task(sample_readiness(procs, stop_sampling, samples))
        tasks = [asyncio.create_task(m.read()) for r in rooms for m in r.members]
        talkers = [asyncio.create_task(r.talk(stop_talk)) for r in rooms]
        await asyncio.sleep(3)

        broke = time.monotonic()
        if mode == "failover":
            victim.kill()
            back = broke
        else:
            victim.kill(signal.SIGSTOP)
            await asyncio.sleep(STOP_SECONDS)
            victim.kill(signal.SIGCONT)
            back = time.monotonic()
        lost_rooms = [r for r in rooms if r.shard == 0]
        served_again = None
        while time.monotonic() - back < SERVE_AGAIN_WITHIN + 5:
            if await serves(iface, lost_rooms[0].name):
                served_again = time.monotonic() - back
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # traffic after the shard is back
        stop_talk.set()
        await asyncio.gather(*talkers)
        end = time.monotonic()
        await asyncio.sleep(2)  # the last broadcasts arrive
        stop_sampling.set()
        await sampler

        alive = [p.name for p in procs if p.alive()]
        declared = {p.name: log_count(p, "peers without heartbeat")
                    + log_count(p, "peers declared this process dead") for p in procs}
        healthy = [r for r in rooms if r.shard != 0]
        wrong, closed, pauses = [], [], []
        for room in healthy:
            for m in room.members:
                if m.numbers() != list(range(len(room.sent))):
                    wrong.append(f"{room.name}: got {len(m.numbers())} of {len(room.sent)}, "
                                 f"{len(m.numbers()) - len(set(m.numbers()))} twice, "
                                 f"in order: {m.numbers() == sorted(m.numbers())}")
                if m.closed_at is not None:
                    closed.append(f"{room.name}: {m.code}")
                pauses.append(m.pause(broke - 1, end))
        lost_fate = [f"{r.name}: {len(set(m.numbers()))}/{len(r.sent)}"
                     + (f" closed {m.code} {m.closed_at - broke:.1f}s after"
                        if m.closed_at is not None else " open")
                     for r in lost_rooms for m in r.members]
        resumed = [r.first_after(back) for r in lost_rooms]
        for room in rooms:
            for m in room.members:
                if m.closed_at is None:
                    await m.sock.close()
        await asyncio.gather(*tasks)
    finally:
        victim.kill(signal.SIGCONT)
        stop_talk.set()
        stop_sampling.set()
        client.close()
        fleet.stop()

    unready = [s for s in samples if s[2] != 200]
    stale = sum(1 for s in samples if s[2] == 200 and "heartbeat stale" in s[3])
    by_proc = {p.name: sum(1 for s in samples if s[1] == p.name) for p in procs}
    reasons = sorted({f"{name}: {code} {body}" for _, name, code, body in unready})
    pause = max(pauses)
    lost_total = sum(len(r.sent) - len(set(m.numbers())) for r in healthy for m in r.members)
    event = ("SIGKILL of its master, its replica promoted" if mode == "failover"
             else f"SIGSTOP of its master (no replica) for {STOP_SECONDS:.0f} s, then SIGCONT")
    since = "the kill" if mode == "failover" else "SIGCONT"
    result = (f"readiness: {len(unready)} of {len(samples)} samples not 200 {reasons[:4]} "
              f"({stale} answered 200 with a stale heartbeat); "
              f"healthy rooms: lost {lost_total} of {sum(len(r.sent) for r in healthy)} sent "
              f"(x{PER_ROOM} members), longest pause {pause:.2f} s, {len(closed)} closed; "
              f"lost shard's rooms: a new connection served "
              f"{served_again if served_again is None else round(served_again, 2)} s after "
              f"{since}, talk resumed "
              f"{[None if t is None else round(t - back, 2) for t in resumed]} s; "
              f"members {lost_fate}; peers declared dead {sum(declared.values())}")
    ok = (not unready and not wrong and not closed and pause <= MAX_PAUSE
          and served_again is not None and len(alive) == 3 and not any(declared.values()))
    figures.record(
        f"2b. one shard out ({mode})",
        f"own 3-master cluster, cluster-require-full-coverage no; the lost shard holds {{hb}} "
        f"and 2 of 6 rooms ({PER_ROOM} sockets, {RATE:.0f} msg/s each); {event}; 1 interface, "
        f"2 workers; /readyz sampled every 0.5 s ({by_proc})",
        "readiness; messages lost, order and longest pause in the healthy shards' rooms; "
        "seconds until the lost shard's rooms serve again", result, ok,
        unready=len(unready), pause_s=round(pause, 2), lost=lost_total,
        served_again_s=served_again)
    print(result)
    assert not unready, reasons
    assert not wrong, wrong
    assert not closed, closed
    assert pause <= MAX_PAUSE, pause
    assert len(alive) == 3, alive
    assert not any(declared.values()), declared
    assert served_again is not None and served_again <= SERVE_AGAIN_WITHIN, served_again


# -- the layer and one process's readiness, in this process, with one shard stopped ---------

FULL_COVERAGE_NO = {"cluster-require-full-coverage": "no"}


@pytest.fixture
def plain_cluster(tmp_path: Path) -> Iterator[LocalRedis]:
    local = LocalRedis(tmp_path / "plain", masters=3, replicas=0, config=FULL_COVERAGE_NO)
    local.start()
    try:
        yield local
    finally:
        for node in local.nodes:
            node.kill(signal.SIGCONT)
        local.stop()


def node_of(local: LocalRedis, key: str) -> RedisNode:
    client = RedisCluster.from_url(local.urls[0])
    try:
        port = client.get_node_from_key(key).port
    finally:
        client.close()
    return next(n for n in local.nodes if n.port == port)


def quick_layer(local: LocalRedis, prefix: str, retry_timeout: float) -> Any:
    from channels_fleet.layers import RedisClusterChannelLayer

    # A 2 s socket timeout: a stopped node's commands fail after 2 s instead of 5.
    return RedisClusterChannelLayer(
        hosts=[{"address": url, "socket_timeout": 2} for url in local.urls], prefix=prefix,
        retry_timeout=retry_timeout)


async def test_one_shard_out__sends_to_the_other_shards_do_not_wait(plain_cluster: LocalRedis,
                                                                     figures: Figures) -> None:
    """While a send to a stopped shard is retried (up to retry_timeout), sends to the other
    shards go out at once: an interface relaying to one worker whose inbox is on a lost shard
    must not stall the sockets of every other worker."""
    retry = 4.0
    layer = quick_layer(plain_cluster, "shardout", retry)
    lost, healthy = "lost.one", next(
        f"healthy.{i}" for i in range(100)
        if node_of(plain_cluster, channel_key("shardout", f"healthy.{i}")).port
        != node_of(plain_cluster, channel_key("shardout", "lost.one")).port)
    victim = node_of(plain_cluster, channel_key("shardout", lost))
    try:
        for channel in (lost, healthy):  # connections open, scripts loaded
            await layer.send(channel, {"type": "warm"})
            await layer.receive(channel)
        victim.kill(signal.SIGSTOP)
        doomed = asyncio.create_task(layer.send(lost, {"type": "doomed"}))
        await asyncio.sleep(0.05)
        waits, started = [], time.monotonic()
        while time.monotonic() - started < 2 + retry + 2:  # past the doomed send's failure
            asked = time.monotonic()
            await asyncio.wait_for(layer.send(healthy, {"type": "n", "n": len(waits)}), 30)
            waits.append(time.monotonic() - asked)
            await asyncio.sleep(0.1)
        outcome = (await asyncio.gather(doomed, return_exceptions=True))[0]
        victim.kill(signal.SIGCONT)
        got = [(await asyncio.wait_for(layer.receive(healthy), 10))["n"] for _ in waits]
    finally:
        victim.kill(signal.SIGCONT)
        await layer.close_pools()
    longest = max(waits)
    figures.record(
        "2b. one shard out: the layer's sends",
        f"3 masters, no replicas; SIGSTOP of the shard of one channel, a send to it retried "
        f"(retry_timeout {retry:g} s, socket_timeout 2 s) while another shard's channel gets "
        f"a send every 0.1 s",
        "longest wait of a send to the healthy shard; what became of the stopped shard's send",
        f"{len(waits)} sends, longest {longest:.3f} s; stopped shard's send: {outcome!r:.90}",
        longest < 1.0, longest_s=round(longest, 3))
    assert got == list(range(len(waits)))
    assert longest < 1.0, f"a send to a healthy shard waited {longest:.2f} s"
    assert isinstance(outcome, Exception), outcome  # LayerUnavailable after retry_timeout


class _Alive:
    """A liveness that is always fresh: only the inbox decides this process's readiness."""

    age = 0.0
    fresh = True
    workers_full = False

    async def start(self, *args: Any) -> None:
        pass

    async def stop(self) -> None:
        pass


async def test_one_shard_out__a_process_whose_own_inbox_is_there_turns_unready(
        plain_cluster: LocalRedis, figures: Figures) -> None:
    """A process that cannot reach its own inbox cannot serve: unready once its receive has
    waited longer than retry_timeout (a failover shorter than that is waited out), ready again
    once the shard is back. Its heartbeat (elsewhere) says nothing about that."""
    from channels_fleet.relay.side import RelaySide

    retry = 4.0
    layer = quick_layer(plain_cluster, "fleet", retry)
    side = RelaySide(layer, "fleet.worker", None, on_undeliverable=lambda *a: None,
                     peers=lambda: [], on_dead=lambda dead: None, on_lost=lambda: None,
                     liveness=_Alive())  # type: ignore[arg-type]
    channel = await side.start()
    victim = node_of(plain_cluster, channel_key("fleet", channel))
    try:
        await asyncio.sleep(2)  # an idle inbox: its BLMPOP answers every second
        assert side.ready() == (True, "ok")
        victim.kill(signal.SIGSTOP)
        stopped = time.monotonic()
        unready_after = None
        while time.monotonic() - stopped < retry + 6:
            ok, reason = side.ready()
            if not ok:
                unready_after = time.monotonic() - stopped
                break
            await asyncio.sleep(0.1)
        victim.kill(signal.SIGCONT)
        resumed = time.monotonic()
        ready_after = None
        while time.monotonic() - resumed < 10:
            if side.ready()[0]:
                ready_after = time.monotonic() - resumed
                break
            await asyncio.sleep(0.1)
    finally:
        victim.kill(signal.SIGCONT)
        await side.stop()
        await layer.close_pools()
    figures.record(
        "2b. one shard out: a process's own inbox",
        f"a relay side on 3 masters, no replicas, heartbeat fresh; SIGSTOP of its inbox's shard "
        f"(retry_timeout {retry:g} s), SIGCONT once it is unready",
        "seconds until readiness false; seconds until ready again after SIGCONT",
        f"unready {unready_after if unready_after is None else round(unready_after, 2)} s after "
        f"SIGSTOP ({reason!r}); "
        f"ready {ready_after if ready_after is None else round(ready_after, 2)} s after SIGCONT",
        unready_after is not None and ready_after is not None,
        unready_s=unready_after, ready_again_s=ready_after)
    assert unready_after is not None, "stayed ready with its own inbox unreachable"
    assert unready_after >= retry - 1.5, unready_after  # (its last answer may be ~1 s old)
    assert "own inbox unreachable" in reason
    assert ready_after is not None and ready_after < 5, ready_after


async def test_one_shard_out__a_relay_goes_on_with_its_peers_on_other_shards(
        plain_cluster: LocalRedis, figures: Figures) -> None:
    """An interface relays to two workers; the inbox of one is on a stopped shard. What goes to
    the other worker must not wait for the send to the lost one (retried for retry_timeout,
    then given up): before, one round of the relay's flush awaited every destination's send."""
    from channels_fleet.relay import wire
    from channels_fleet.relay.relay import Relay

    retry = 4.0
    layer = quick_layer(plain_cluster, "fleet", retry)
    dropped: list[str] = []
    relay = Relay(layer, "fleet.iface", lambda dest, items: dropped.append(dest))
    await relay.start()
    lost = "peer.lost"
    healthy = next(f"peer.{i}" for i in range(100)
                   if node_of(plain_cluster, channel_key("fleet", f"peer.{i}")).port
                   != node_of(plain_cluster, channel_key("fleet", lost)).port)
    victim = node_of(plain_cluster, channel_key("fleet", lost))
    got: list[tuple[int, float]] = []

    async def read() -> None:
        while True:
            message = await layer.receive(healthy)
            got.extend((item[2]["n"], time.monotonic()) for item in message["items"])

    reader = asyncio.create_task(read())
    try:
        for dest in (lost, healthy):  # warm: connections open, scripts loaded
            relay.post(dest, [wire.EVENT, "c", {"type": "warm", "n": -1}])
        assert await relay.flushed(10)
        victim.kill(signal.SIGSTOP)
        sent: list[float] = []
        started = time.monotonic()
        while time.monotonic() - started < 2 + retry + 2:
            relay.post(lost, [wire.EVENT, "c", {"type": "x", "n": len(sent)}])
            relay.post(healthy, [wire.EVENT, "c", {"type": "x", "n": len(sent)}])
            sent.append(time.monotonic())
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
    finally:
        victim.kill(signal.SIGCONT)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await relay.stop()
        await layer.close_pools()
    numbers = [n for n, _ in got if n >= 0]
    delays = [at - sent[n] for n, at in got if n >= 0]
    longest = max(delays, default=float("inf"))
    figures.record(
        "2b. one shard out: the relay",
        f"a relay posting to two peers every 0.1 s, one peer's inbox on a SIGSTOPped shard "
        f"(retry_timeout {retry:g} s, socket_timeout 2 s)",
        "delay of the items to the healthy peer; items to the lost peer given up",
        f"{len(numbers)} of {len(sent)} delivered in order: {numbers == list(range(len(sent)))}, "
        f"longest delay {longest:.3f} s; batches to the lost peer given up: {len(dropped)}",
        longest < 1.0, longest_s=round(longest, 3))
    assert numbers == list(range(len(sent)))
    assert longest < 1.0, f"items to a healthy peer waited {longest:.2f} s"
    assert dropped and set(dropped) == {lost}, dropped  # given up after retry_timeout, reported
