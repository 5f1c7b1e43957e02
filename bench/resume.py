"""Resumable sessions under interface rolls and kills, against plain WebSockets, same run.

Starts a Redis Cluster (3 masters + 3 replicas), 2 interfaces (with a resume key) and 2 workers
of the bench's project (``bench/resumebench/resumeproject``; real ``channels-fleet``
processes), and a round-robin TCP balancer
in front of the interfaces (``bench/resumebench/balancer.py``, its own process). Through it,
``--clients`` resumable clients (``FleetSocket``) and ``--plain`` plain WebSockets (reconnecting
with the same back-off) open the project's consumer (``ws/member/<name>/``), one name for
each kind: each client echoes a numbered frame every ``1/--rate`` s and every consumer
is in its kind's group, to which this process sends numbered messages (``--room-rate`` a
second, the same numbers to both groups). Meanwhile every interface is rolled twice (a new one
ready, then SIGTERM: a drain closes its sockets with 1001), then one interface and one worker
are killed (SIGKILL) and replaced, the bench waiting for every client to be back between
faults. Then the sending stops, late frames get up to 20 s, and the lines are printed:

    resume: clients=1000 app_disconnects=0 lost=0 duplicated=0 resumed=N p95_gap_ms=X
    plain:  clients=1000 app_disconnects=N lost=N duplicated=0 reconnected=N p95_gap_ms=X
    contrast: ...

``app_disconnects``: the consumers' own ``disconnect`` counts (in Redis) before the bench
closes its clients: the app saw its client leave. ``lost``: echo frames never echoed plus
(room message, client) pairs never received; ``duplicated``: any of them received twice.
``resumed``: resumes the clients made (the interfaces' ``sessions_resumed_total`` is printed
beside it). ``p95_gap_ms``: per client that was cut, its longest time from a cut (its
connection lost) to the first frame read after reconnecting, p95 over those clients. The exit
status is 1 unless the resumable clients' app_disconnects, lost and duplicated are all 0.

    make bench-resume        # or: .venv/bin/python bench/resume.py --clients 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from redis.cluster import RedisCluster  # noqa: E402
from resumebench.clients import PlainClient, ResumeClient  # noqa: E402
from resumebench.fleet import Fleet  # noqa: E402

import channels_fleet  # noqa: E402
from channels_fleet.dev.cluster import LocalRedis  # noqa: E402
from channels_fleet.dev.stack import FleetStack  # noqa: E402
from channels_fleet.layers import RedisClusterChannelLayer  # noqa: E402

PROJECT = ROOT / "bench" / "resumebench"
#: The fleet's session key (48 characters; a bench's only).
RESUME_KEY = "resume-bench-key-0123456789abcdef0123456789abcd"

Client = ResumeClient | PlainClient
RECOVER_TIMEOUT = 60.0
SETTLE = 20.0


async def open_all(clients: list[Any], batch: int = 50) -> None:
    for i in range(0, len(clients), batch):
        await asyncio.gather(*(c.open() for c in clients[i:i + batch]))


async def echo_loop(client: Client, period: float, running: asyncio.Event) -> None:
    await asyncio.sleep(random.uniform(0, period))
    while running.is_set():
        await client.send_next()
        await asyncio.sleep(period)


async def room_loop(layer: RedisClusterChannelLayer, groups: list[str], rate: float,
                    sent: list[int], sent_at: list[float], running: asyncio.Event) -> None:
    n = 0
    while running.is_set():
        message = {"type": "room.message", "text": f"g{n}"}
        sent_at.append(time.monotonic())
        await asyncio.gather(*(layer.group_send(g, message) for g in groups))
        sent.append(n)
        n += 1
        await asyncio.sleep(1 / rate)


async def recovered(kinds: dict[str, Sequence[Client]], timeout: float) -> str:
    """Wait until no client has an open cut (each read a frame since reconnecting); how long
    each kind took (or how many were still cut at ``timeout``)."""
    start, took = time.monotonic(), dict[str, str]()
    while len(took) < len(kinds) and time.monotonic() - start < timeout:
        for kind, clients in kinds.items():
            if kind not in took and not any(c.link.cut_at is not None for c in clients):
                took[kind] = f"{time.monotonic() - start:.1f}s"
        await asyncio.sleep(0.2)
    for kind, clients in kinds.items():
        took.setdefault(kind, f"{sum(c.link.cut_at is not None for c in clients)} still cut")
    return ", ".join(f"{kind} {when}" for kind, when in took.items())


def records(redis: RedisCluster, name: str) -> dict[str, int]:
    """What the consumers of ``name`` counted: ``connect``, ``disconnect:<code>``."""
    raw: dict[bytes, bytes] = redis.hgetall(f"rbench:{name}")  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}


def p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))]


def summary(clients: Sequence[Client], room_sent: list[int], recs: dict[str, int]
            ) -> dict[str, Any]:
    cut = [c for c in clients if c.link.cuts]
    worst = [float("inf") if c.link.cut_at is not None else max(c.link.gaps) for c in cut]
    every = sorted(g for c in clients for g in c.link.gaps)
    return {
        "clients": len(clients),
        "app_disconnects": sum(n for r, n in recs.items() if r.startswith("disconnect")),
        "app_connects": recs.get("connect", 0),
        "lost": sum(c.tally.lost(room_sent) for c in clients),
        "echo_lost": sum(c.tally.sent - len(c.tally.echoes) for c in clients),
        "duplicated": sum(c.tally.duplicated for c in clients),
        "cut_clients": len(cut), "cuts": sum(c.link.cuts for c in clients),
        "unrecovered": sum(c.link.cut_at is not None for c in clients),
        "p95_gap_ms": p95(worst) * 1000,
        "gap_p50_ms": every[len(every) // 2] * 1000 if every else 0.0,
        "gap_max_ms": every[-1] * 1000 if every else 0.0,
        "echo_sent": sum(c.tally.sent for c in clients),
        "other": sum(c.tally.other for c in clients),
    }


def gaps_by_fault(clients: Sequence[Client], starts: list[tuple[str, float]]) -> str:
    """p95 / max of the gaps whose cut fell in each fault's window (its start to the next's)."""
    out = []
    for i, (fault, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else float("inf")
        gaps = [g for c in clients for g, at in zip(c.link.gaps, c.link.cut_times, strict=True)
                if start <= at < end]
        if gaps:
            out.append(f"{fault} {p95(gaps) * 1000:.0f}/{max(gaps) * 1000:.0f} ({len(gaps)})")
    return "; ".join(out) or "none"


def room_lost_by_fault(clients: Sequence[Client], room_at: list[float],
                       starts: list[tuple[str, float]]) -> str:
    """The room's (message, client) losses by the fault window its message was sent in."""
    windows = [("before", 0.0), *starts]
    lost = [0] * len(windows)
    for n, at in enumerate(room_at):
        missing = sum(1 for c in clients if n not in c.tally.room)
        i = max(i for i, (_, start) in enumerate(windows) if start <= at)
        lost[i] += missing
    return "; ".join(f"{name} {n}" for (name, _), n in zip(windows, lost, strict=True) if n)


def codes(recs: dict[str, int]) -> str:
    return ", ".join(f"{r.split(':')[1]}x{n}" for r, n in sorted(recs.items())
                     if r.startswith("disconnect")) or "none"


async def run(args: argparse.Namespace, tmp: Path) -> int:
    redis = LocalRedis(tmp / "redis", masters=3, replicas=1).start()
    stack = FleetStack(redis.urls[:3], tmp, project=PROJECT, app="resumeproject.asgi:application",
                       env={
        "DJANGO_SETTINGS_MODULE": "resumeproject.settings",
        "CHANNELS_FLEET_LOG_LEVEL": "WARNING",
        "CHANNELS_FLEET_DRAIN_TIMEOUT": "8",
        # Every client on one worker after the kill, plus the plain ones' consumers still
        # running their disconnect: above the default cap of 1,000.
        "CHANNELS_FLEET_CONCURRENCY": str(2 * (args.clients + args.plain) + 1000),
        # The processes import the channels_fleet this bench imported (a checkout's src/).
        "PYTHONPATH": os.pathsep.join([str(PROJECT), str(Path(channels_fleet.__file__)
                                                         .resolve().parents[1])]),
    })
    fleet = Fleet(stack, RESUME_KEY)
    layer = RedisClusterChannelLayer(hosts=redis.urls[:3], prefix="rbench")
    store = RedisCluster.from_url(redis.urls[0])
    tag = f"rb{os.getpid()}"
    names = {"resume": f"{tag}r", "plain": f"{tag}p"}
    resumable: list[ResumeClient] = []
    plain: list[PlainClient] = []
    try:
        fleet.start(args.interfaces, args.workers)
        base = f"ws://127.0.0.1:{fleet.balancer.port}/ws/member"
        resumable = [ResumeClient(f"{base}/{names['resume']}/") for _ in range(args.clients)]
        plain = [PlainClient(f"{base}/{names['plain']}/") for _ in range(args.plain)]
        everyone: list[Client] = [*resumable, *plain]
        t0, cpu0 = time.monotonic(), time.process_time()
        await open_all(everyone)
        print(f"  {len(everyone)} clients open in {time.monotonic() - t0:.1f}s", flush=True)
        running, room_sent, room_at = asyncio.Event(), list[int](), list[float]()
        running.set()
        tasks = [asyncio.create_task(echo_loop(c, 1 / args.rate, running)) for c in everyone]
        tasks.append(asyncio.create_task(room_loop(
            layer, [f"room-{n}" for n in names.values()], args.room_rate, room_sent,
            room_at, running)))
        await asyncio.sleep(args.warmup)
        faults = [*(("roll", s) for _ in range(2) for s in range(args.interfaces)),
                  ("kill_interface", 0), ("kill_worker", 0)]
        starts: list[tuple[str, float]] = []
        for fault, slot in faults:
            started = time.monotonic()
            starts.append((f"{fault} {slot}", started))
            await getattr(fleet, fault)(slot)
            back = await recovered({"resumable": resumable, "plain": plain}, RECOVER_TIMEOUT)
            print(f"  {fleet.events[-1]}: {time.monotonic() - started:.1f}s; clients back "
                  f"after it: {back}", flush=True)
            if failed := stack.failed():
                raise RuntimeError(failed)
            await asyncio.sleep(args.pause)
        running.clear()
        await asyncio.gather(*tasks)
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline and not all(
                c.tally.whole(room_sent) for c in resumable):
            await asyncio.sleep(0.2)
        fleet.scrape_all()
        wall = time.monotonic() - t0
        print(f"  CPU over the {wall:.0f}s run: the clients' process "
              f"{(time.process_time() - cpu0) / wall:.0%} of a core, the balancer "
              f"{fleet.balancer.cpu_seconds() / wall:.0%}", flush=True)
        ours = summary(resumable, room_sent, records(store, names["resume"]))
        theirs = summary(plain, room_sent, records(store, names["plain"]))
        report(args, fleet, resumable, plain, ours, theirs, room_sent)
        room_at = room_at[:len(room_sent)]  # a send cut short at the end is not counted
        print(f"  room losses by the fault window their message was sent in: resumable: "
              f"{room_lost_by_fault(resumable, room_at, starts) or 'none'}; plain: "
              f"{room_lost_by_fault(plain, room_at, starts) or 'none'}")
        stuck = [c for c in resumable if c.link.cut_at is not None]
        if stuck:
            print(f"  resumable never back (no frame since their cut): {len(stuck)}; of them "
                  f"connected now {sum(c.link.connected for c in stuck)}, in a new session "
                  f"{sum(c.new_sessions > 0 for c in stuck)}, ended "
                  f"{sum(c.ended for c in stuck)}; cut at +"
                  f"{', +'.join(f'{(c.link.cut_at or t0) - t0:.0f}s' for c in stuck[:8])} "
                  f"(faults at +"
                  f"{', +'.join(f'{at - t0:.0f}s' for _, at in starts)})")
        print(f"  gap ms p95/max (cuts) by fault: resumable: {gaps_by_fault(resumable, starts)}; "
              f"plain: {gaps_by_fault(plain, starts)}")
        print(f"  resume disconnect codes: {codes(records(store, names['resume']))}; plain: "
              f"{codes(records(store, names['plain']))}")
        ok = ours["app_disconnects"] == ours["lost"] == ours["duplicated"] == 0
        return 0 if ok else 1
    finally:
        closing: list[Client] = [*resumable, *plain]
        await asyncio.gather(*(c.close() for c in closing), return_exceptions=True)
        await layer.close_pools()
        store.close()
        fleet.stop()
        redis.stop()


def report(args: argparse.Namespace, fleet: Fleet, resumable: list[ResumeClient],
           plain: list[PlainClient], ours: dict[str, Any], theirs: dict[str, Any],
           room_sent: list[int]) -> None:
    resumed = sum(c.resumes for c in resumable)
    print(f"resume: clients={ours['clients']} app_disconnects={ours['app_disconnects']} "
          f"lost={ours['lost']} duplicated={ours['duplicated']} resumed={resumed} "
          f"p95_gap_ms={ours['p95_gap_ms']:.0f}", flush=True)
    print(f"plain:  clients={theirs['clients']} app_disconnects={theirs['app_disconnects']} "
          f"lost={theirs['lost']} duplicated={theirs['duplicated']} "
          f"reconnected={sum(c.reconnects for c in plain)} "
          f"p95_gap_ms={theirs['p95_gap_ms']:.0f}", flush=True)
    print(f"contrast: app_disconnects {ours['app_disconnects']} vs {theirs['app_disconnects']}, "
          f"lost {ours['lost']} vs {theirs['lost']} (per client "
          f"{ours['lost'] / max(1, ours['clients']):.2f} vs "
          f"{theirs['lost'] / max(1, theirs['clients']):.2f}), resumable against plain")
    for label, s in (("resume", ours), ("plain", theirs)):
        print(f"  {label}: app connects={s['app_connects']} (clients {s['clients']}), echo "
              f"sent={s['echo_sent']} echo_lost={s['echo_lost']}, room messages "
              f"sent={len(room_sent)}, cut clients={s['cut_clients']} cuts={s['cuts']} "
              f"unrecovered={s['unrecovered']}, gap ms p50={s['gap_p50_ms']:.0f} "
              f"max={s['gap_max_ms']:.0f}, other frames={s['other']}")
    print(f"  resume: new sessions (a session lost)={sum(c.new_sessions for c in resumable)}; "
          f"interfaces: sessions_started_total="
          f"{fleet.total('channels_fleet_sessions_started_total', 'interface'):.0f} "
          f"sessions_resumed_total="
          f"{fleet.total('channels_fleet_sessions_resumed_total', 'interface'):.0f} "
          f"(a killed interface's as last scraped) resume_refused_total="
          f"{fleet.labelled('channels_fleet_resume_refused_total', 'interface')}")
    print(f"  workers: sessions_ended_total="
          f"{fleet.labelled('channels_fleet_sessions_ended_total', 'worker')} "
          f"session_frames_replayed_total="
          f"{fleet.total('channels_fleet_session_frames_replayed_total', 'worker'):.0f}")
    print(f"  faults: {'; '.join(fleet.events)}")
    print(f"  RSS MB at the end: {fleet.rss()}")
    print(f"  load average: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="resumable clients")
    parser.add_argument("--plain", type=int, default=None,
                        help="plain WebSocket clients beside them (default: as many)")
    parser.add_argument("--rate", type=float, default=0.5, help="echo frames per client a second")
    parser.add_argument("--room-rate", type=float, default=1.0,
                        help="room messages a second (to each kind's group)")
    parser.add_argument("--interfaces", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between faults")
    parser.add_argument("--dir", type=Path, default=None,
                        help="keep the processes' logs here (default: a temporary directory)")
    args = parser.parse_args()
    if args.plain is None:
        args.plain = args.clients
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(args, args.dir.resolve()))
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
