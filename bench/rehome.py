"""Re-homing under a rolling restart: 500 busy sockets, every worker restarted.

Starts a Redis Cluster (3 masters + 3 replicas), one interface and 3 workers (real
``channels-fleet`` processes, the split tests' project), opens the sockets and restarts the
workers in turn as a Deployment's rolling update does (a new worker ready, then SIGTERM to an
old one). Of the sockets, a tenth (``--members``) are members of a room (the project's
``RoomConsumer``: its connect joins the room's group) and the rest echo sockets, each sending
a numbered frame a second. Throughout the roll the bench sends numbered messages to the room's
group (``group_send`` on the project's layer, ``--group-rate`` a second), as any process posting
to a group does. Prints one line:

    rehome: disconnects=N sockets=N p95_gap_ms=N lost_frames=N missed=N group_sent=N

then the details. ``disconnects``: sockets (echo or member) that closed. ``gap``: per echo
socket, the longest a frame waited for its echo during the run (so the hand-over plus the echo
itself); p95 over the echo sockets. ``lost_frames``: echo frames whose echo never came
(client to server and back). ``group_sent``: group messages whose ``group_send`` returned.
``missed``: of those, (message, member) pairs that never reached a member whose socket stayed
open, after waiting up to 15 s for late ones (server to client: a group message sent to a
consumer while its socket was being re-homed). Targets: disconnects=0, p95_gap_ms <= 1000,
lost_frames=0, missed=0; the exit status is 1 when disconnects or missed is not 0.

    make bench-rehome            # or: .venv/bin/python bench/rehome.py --sockets 500
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' support package: the project, the load

from support.rolling import rolling_restart  # noqa: E402
from support.room import Room  # noqa: E402
from support.split import split_stack  # noqa: E402

from channels_fleet.dev.cluster import LocalRedis  # noqa: E402


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def gap_buckets(text: str) -> str:
    """The interface's channels_fleet_rehome_gap_seconds histogram, as le=count pairs."""
    found = re.findall(r'^channels_fleet_rehome_gap_seconds_bucket\{le="([^"]+)"\} (\S+)$', text,
                       re.M)
    return " ".join(f"{le}:{float(n):.0f}" for le, n in found)


async def run(sockets: int, rate: float, tmp: Path, restart: bool = True, members: int = 0,
              group_rate: float = 50.0) -> int:
    redis = LocalRedis(tmp / "redis", masters=3, replicas=1).start()
    fleet = split_stack(redis.urls[:3], tmp)
    room = Room(redis.urls[:3], "rehome-room")
    try:
        fleet.env["CHANNELS_FLEET_LOG_LEVEL"] = "WARNING"
        iface = fleet.interface(wait=False)
        workers = [fleet.worker(wait=False) for _ in range(3)]
        for proc in (iface, *workers):
            proc.wait_ready()
        t0 = time.monotonic()
        await room.open(iface, members)
        room.start(group_rate)
        try:
            result = await rolling_restart(fleet, iface, workers if restart else [],
                                           sockets - members, rate)
        finally:
            await room.stop()
        await room.settle(15)
        missing = room.missing()
        missed = room.missed()
        member_disconnects = sum(m.code is not None for m in room.members)
        whole = dataclasses.replace(result, sockets=result.sockets + len(room.members),
                                    disconnects=result.disconnects + member_disconnects)
        metrics = scrape(iface.metrics_port)
        print(f"{whole.line()} missed={missed} group_sent={len(room.sent)}", flush=True)
        gaps = sorted(result.gaps)
        print(f"  echo sockets={result.sockets} frames sent={result.frames} "
              f"out_of_order={result.out_of_order} run={time.monotonic() - t0:.1f}s "
              f"worker exit codes={result.exit_codes}")
        if gaps:
            print(f"  gap ms: p50={gaps[len(gaps) // 2] * 1000:.0f} "
                  f"p99={gaps[int(0.99 * (len(gaps) - 1))] * 1000:.0f} "
                  f"max={gaps[-1] * 1000:.0f}")
        examples = room.examples()
        print(f"  room: members={len(room.members)} (open {len(room.open_members())}, closed "
              f"{sorted(m.code for m in room.members if m.code is not None)}), group messages "
              f"sent={len(room.sent)} at {group_rate:g}/s, missed={missed} by "
              f"{len(missing)} members{'; e.g. ' + examples if examples else ''}")
        rehomes = re.findall(r'^channels_fleet_rehomes_total\{cause="(\w+)"\} (\S+)$', metrics,
                             re.M)
        print("  interface rehomes_total:", ", ".join(f"{c}={float(n):.0f}" for c, n in rehomes))
        replayed = re.findall(r'^channels_fleet_replayed_frames_total\{cause="(\w+)"\} (\S+)$',
                              metrics, re.M)
        print("  interface replayed_frames_total (a drain replays nothing):",
              ", ".join(f"{c}={float(n):.0f}" for c, n in replayed))
        print("  interface rehome_gap_seconds buckets (le:count):", gap_buckets(metrics))
        print(f"  sockets per new worker afterwards: {sorted(result.owners_after.values())}")
        return 0 if whole.disconnects == 0 and missed == 0 else 1
    finally:
        await room.close()
        fleet.stop()
        redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1.0,
                        help="frames per echo socket per second")
    parser.add_argument("--members", type=int, default=None,
                        help="of the sockets, how many are room members (default: a tenth)")
    parser.add_argument("--group-rate", type=float, default=50.0,
                        help="group messages to the room per second")
    parser.add_argument("--no-restart", action="store_true",
                        help="the same traffic without restarts: the gap's baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rehome-") as tmp:
        members = args.sockets // 10 if args.members is None else args.members
        return asyncio.run(run(args.sockets, args.rate, Path(tmp), not args.no_restart,
                               members, args.group_rate))


if __name__ == "__main__":
    sys.exit(main())
