"""Re-homing under a rolling restart: 500 echo sockets, steady traffic, every worker restarted.

Starts a Redis Cluster (3 masters + 3 replicas), one interface and 3 workers (real
``channels-fleet`` processes, the split tests' project), opens the sockets, keeps every one
sending a numbered frame a second, and restarts the workers in turn as a Deployment's rolling
update does (a new worker ready, then SIGTERM to an old one). Prints one line:

    rehome: disconnects=N sockets=N p95_gap_ms=N lost_frames=N

then the details. ``gap``: per socket, the longest a frame waited for its echo during the run
(so the hand-over plus the echo itself); p95 over the sockets. ``lost_frames``: frames whose echo
never came. Targets: disconnects=0, p95_gap_ms <= 1000.

    make bench-rehome            # or: .venv/bin/python bench/rehome.py --sockets 500
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' support package: the project, the load

from support.rolling import rolling_restart  # noqa: E402
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


async def run(sockets: int, rate: float, tmp: Path, restart: bool = True) -> int:
    redis = LocalRedis(tmp / "redis", masters=3, replicas=1).start()
    fleet = split_stack(redis.urls[:3], tmp)
    try:
        fleet.env["CHANNELS_FLEET_LOG_LEVEL"] = "WARNING"
        iface = fleet.interface(wait=False)
        workers = [fleet.worker(wait=False) for _ in range(3)]
        for proc in (iface, *workers):
            proc.wait_ready()
        t0 = time.monotonic()
        result = await rolling_restart(fleet, iface, workers if restart else [], sockets, rate)
        metrics = scrape(iface.metrics_port)
        print(result.line(), flush=True)
        gaps = sorted(result.gaps)
        print(f"  frames sent={result.frames} out_of_order={result.out_of_order} "
              f"run={time.monotonic() - t0:.1f}s worker exit codes={result.exit_codes}")
        print(f"  gap ms: p50={gaps[len(gaps) // 2] * 1000:.0f} "
              f"p99={gaps[int(0.99 * (len(gaps) - 1))] * 1000:.0f} max={gaps[-1] * 1000:.0f}")
        rehomes = re.findall(r'^channels_fleet_rehomes_total\{cause="(\w+)"\} (\S+)$', metrics,
                             re.M)
        print("  interface rehomes_total:", ", ".join(f"{c}={float(n):.0f}" for c, n in rehomes))
        replayed = re.findall(r'^channels_fleet_replayed_frames_total\{cause="(\w+)"\} (\S+)$',
                              metrics, re.M)
        print("  interface replayed_frames_total (a drain replays nothing):",
              ", ".join(f"{c}={float(n):.0f}" for c, n in replayed))
        print("  interface rehome_gap_seconds buckets (le:count):", gap_buckets(metrics))
        print(f"  sockets per new worker afterwards: {sorted(result.owners_after.values())}")
        return 0 if result.disconnects == 0 else 1
    finally:
        fleet.stop()
        redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1.0, help="frames per socket per second")
    parser.add_argument("--no-restart", action="store_true",
                        help="the same traffic without restarts: the gap's baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rehome-") as tmp:
        return asyncio.run(run(args.sockets, args.rate, Path(tmp), not args.no_restart))


if __name__ == "__main__":
    sys.exit(main())
