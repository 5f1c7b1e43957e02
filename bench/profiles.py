"""Profiles: where a message's microseconds go, in the layer and through the split.

Prints, per scenario, a header line (messages/s, µs of CPU per message) and two tables of
the top functions, by own time and by cumulative time:

      own%   cum%     calls  function (file:line)

own% is a function's own time (cProfile's tottime; py-spy: samples with it as the leaf
frame), cum% its time with everything it called (py-spy: samples with it anywhere on the
stack), both as a share of the profiled time. Paths are shortened relative to site-packages,
src/ or the standard library.

Scenarios:

- layer (in process, cProfile): our RedisClusterChannelLayer on one local Redis, with
  ``bench/layer.py``'s workloads: ``throughput`` with 1 producer/consumer pair and with 16,
  ``group_fanout`` to 1,000 channels with receivers waiting (its figures include the 1,000
  ``group_add`` of its set-up). Each runs twice: unprofiled for the header's figures, then
  under cProfile for the tables (the profiler's own cost inflates those; the header says by
  how much).
- echo (py-spy): one interface and one worker as ``bench/split.py`` starts them, 50 clients
  echoing in closed loop (``split.echo_load``) while py-spy samples the interface and the
  worker for ``--seconds``. Messages are the interface's ``messages_total{direction="out"}``
  over the sampled window; CPU per message comes from each process's /proc/<pid>/stat
  (utime + stime; "kernel share" is stime's part), the Redis server's included. py-spy
  samples Python frames only: a leaf such as ``_SelectorSocketTransport.write`` holds the
  send(2) under it, on loopback the peer's TCP receive too; the shares are of the samples
  where a thread was runnable, waiting for a core included. py-spy needs ptrace of the
  children (root, or ptrace_scope 0); without it the tables are skipped, with the cause, and
  the rest still runs.

- broadcast (py-spy): ``bench/split.py``'s broadcast, ``--sockets`` idle sockets (5,000) on 2
  interfaces and 2 workers, ``--broadcasts`` group_sends (10) one after another while py-spy
  samples each interface and worker; the header gives each broadcast's p95 and each process's
  ms of CPU per broadcast (Redis's included), the sum being what 2 cores share.

Everything runs on the event loop the services run (uvloop where installed:
services/eventloop.py); ``--loop asyncio`` profiles asyncio's own instead, in process and in
the interface and worker it starts.

The raw profiles (``<scenario>.pstats``, ``<scenario>.<process>.collapsed``) go to ``--out``
(default: a temp dir, printed). Figures on a shared machine move between runs: read the
tables for where the time goes, not for absolute rates.

    make bench-profile
    .venv/bin/python bench/profiles.py --only layer --top 15
    .venv/bin/python bench/profiles.py --only echo --seconds 20 --out /tmp/prof
    .venv/bin/python bench/profiles.py --only broadcast --broadcasts 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import re
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layer import BIG, group_fanout, throughput
from split import broadcast, echo_load, fleet_layer, fleet_stack, open_many, raise_fd_limit

import channels_fleet
from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.stack import FleetStack
from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.services import eventloop
from channels_fleet.settings import EVENT_LOOPS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.scrape import metric  # noqa: E402  (the tests' /metrics reader)

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
MESSAGES_OUT = "channels_fleet_messages_total"  # the interface's frames sent to clients


# -- shortening paths ---------------------------------------------------------------------------

def _prefixes() -> list[str]:
    """Directories a file's path is shown relative to, most specific first."""
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"],
            str(Path(channels_fleet.__file__).resolve().parent.parent),  # src/
            str(Path(sysconfig.get_paths()["stdlib"]).resolve()), sysconfig.get_paths()["stdlib"],
            str(ROOT)]
    return sorted({d.rstrip("/") + "/" for d in dirs}, key=len, reverse=True)


PREFIXES = _prefixes()


def short(path: str) -> str:
    for prefix in PREFIXES:
        if path.startswith(prefix):
            return path[len(prefix):]
    if "site-packages/" in path:  # another venv's (py-spy shows a child's own paths)
        return path.rsplit("site-packages/", 1)[1]
    if "/src/" in path:
        return path.rsplit("/src/", 1)[1]
    return path


# -- tables ------------------------------------------------------------------------------------

@dataclass
class Row:
    own: float  # share of the profiled time, 0..1
    cum: float
    calls: str
    function: str


def print_tables(rows: list[Row], top: int, unit: str) -> None:
    for title, key in (("own", lambda r: r.own), ("cumulative", lambda r: r.cum)):
        print(f"  top {top} by {title} time ({unit}):")
        print(f"  {'own%':>6} {'cum%':>6} {'calls':>9}  function (file:line)")
        for row in sorted(rows, key=key, reverse=True)[:top]:
            print(f"  {row.own * 100:6.1f} {row.cum * 100:6.1f} {row.calls:>9}  {row.function}")
        print()


def pstats_rows(stats: pstats.Stats) -> tuple[list[Row], float]:
    """One row per function of a cProfile run, and the run's total own time (s)."""
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in raw.values()) or 1e-9
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in raw.items():
        name = func if file == "~" else f"{func} ({short(file)}:{line})"  # "~": a builtin
        calls = str(nc) if cc == nc else f"{nc}/{cc}"
        rows.append(Row(tt / total, ct / total, calls, name))
    return rows, total


def collapsed_rows(path: Path) -> tuple[list[Row], int]:
    """Rows from py-spy's collapsed stacks (``--format raw``): own = samples with the function
    as the leaf frame, cumulative = samples with it anywhere on the stack (once per sample)."""
    own: Counter[str] = Counter()
    cum: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [spy_frame(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            cum[frame] += n
    total_ = total or 1
    return [Row(own[f] / total_, cum[f] / total_, "-", f) for f in cum], total


def spy_frame(frame: str) -> str:
    """``func (/abs/path.py:12)`` with the path shortened."""
    name, sep, where = frame.rpartition(" (")
    if not sep or not where.endswith(")"):
        return frame
    file, _, line = where[:-1].rpartition(":")
    return f"{name} ({short(file)}:{line})" if file else frame


# -- CPU ---------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) so far, from /proc/<pid>/stat."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` so far, seconds: fields 14 and 15 of stat(5)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


# -- layer, in process, cProfile ---------------------------------------------------------------

@dataclass
class LayerRun:
    wall: float  # seconds of the workload
    cpu: float  # this process's CPU seconds in it
    redis_cpu: float  # the redis-server's
    result: float  # what the workload returned
    stats: pstats.Stats | None = None


def layer_run(url: str, redis_pid: int, work: Callable[[Any], Awaitable[float]],
              profile: bool) -> LayerRun:
    layer = RedisClusterChannelLayer(hosts=[url], capacity=BIG, prefix="benchprof")
    # CPU time, not wall: the idle waits (epoll with nothing ready) would swamp the tables.
    prof = cProfile.Profile(time.process_time) if profile else None

    async def go() -> LayerRun:
        await layer.flush()
        try:
            redis0, cpu0, start = cpu_seconds(redis_pid), time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            try:
                result = await work(layer)
            finally:
                if prof:
                    prof.disable()
            wall = time.perf_counter() - start
            return LayerRun(wall, time.process_time() - cpu0, cpu_seconds(redis_pid) - redis0,
                            result)
        finally:
            await layer.flush()
            await layer.close_pools()

    run = asyncio.run(go())
    if prof:
        run.stats = pstats.Stats(prof)
    return run


def layer_scenarios(args: argparse.Namespace, out: Path) -> None:
    messages = args.messages
    cases: list[tuple[str, str, Callable[[Any], Awaitable[float]], int]] = [
        ("layer-1pair", f"throughput, 1 producer/consumer pair, {messages // 1:,} messages",
         lambda layer: throughput(layer, 1, messages, "prof1"), messages),
        ("layer-16pairs", f"throughput, 16 pairs, {messages // 16 * 16:,} messages",
         lambda layer: throughput(layer, 16, messages, "prof16"), messages // 16 * 16),
        ("layer-group1000", f"group_send to 1,000 waiting receivers, {args.repeats} repeats "
         "(+ 1,000 group_add)",
         lambda layer: group_fanout(layer, 1000, args.repeats), 1000 * args.repeats),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-profile-redis-") as tmp:
        redis = LocalRedis(Path(tmp) / "single", masters=1, replicas=0).start()
        try:
            url, pid = redis.urls[0], redis.nodes[0].pid
            assert pid is not None
            for name, what, work, count in cases:
                plain = layer_run(url, pid, work, profile=False)
                profiled = layer_run(url, pid, work, profile=True)
                assert profiled.stats is not None
                profiled.stats.dump_stats(str(out / f"{name}.pstats"))
                if name == "layer-group1000":  # group_fanout returns the median seconds
                    rate, prof_rate = 1000 / plain.result, 1000 / profiled.result
                else:
                    rate, prof_rate = plain.result, profiled.result
                print(f"== {name}: {what}")
                print(f"   {rate:,.0f} msgs/s, {plain.cpu / count * 1e6:.1f} µs CPU/msg in "
                      f"this process + {plain.redis_cpu / count * 1e6:.1f} µs redis-server; "
                      f"under cProfile {prof_rate:,.0f} msgs/s, "
                      f"{profiled.cpu / count * 1e6:.1f} µs/msg")
                rows, total = pstats_rows(profiled.stats)
                print_tables(rows, args.top, f"cProfile, {total:.2f} s CPU profiled")
        finally:
            redis.stop()


# -- echo through the split, py-spy ------------------------------------------------------------

def py_spy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Sampler:
    """One ``py-spy record`` of one process, or the reason there is none."""
    name: str
    pid: int
    out: Path
    proc: subprocess.Popen[bytes] | None = None
    error: str = ""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.out.with_suffix(".py-spy.log")

    def start(self, binary: str | None, seconds: int, rate: int) -> None:
        if binary is None:
            self.error = "py-spy not found (pip install py-spy: the test extra has it)"
            return
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "record", "--pid", str(self.pid), "--nonblocking", "--format", "raw",
                 "--function", "--rate", str(rate), "--duration", str(seconds),
                 "--output", str(self.out)],
                stdout=log, stderr=subprocess.STDOUT)

    def interrupt(self) -> None:
        """End the recording now (py-spy writes what it has on SIGINT)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def wait(self) -> None:
        if self.proc is None:
            return
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code != 0 or not self.out.exists():
            text = self.log.read_text(errors="replace").strip()
            cause = "ptrace refused (not root? ptrace_scope?)" if (
                "ermission" in text or "ptrace" in text.lower()) else f"exit {code}"
            self.error = f"py-spy failed on {self.name} pid {self.pid}: {cause}: {text[-400:]}"


@contextlib.contextmanager
def bench_stack(name: str) -> Iterator[tuple[LocalRedis, FleetStack]]:
    """One local Redis and ``bench/split.py``'s stack on it (no process yet), both stopped
    on the way out."""
    raise_fd_limit()
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-profile-{name}-"))
    redis = LocalRedis(tmp / "redis", masters=1, replicas=0).start()
    stack = fleet_stack(redis.urls[0], tmp)
    try:
        yield redis, stack
    finally:
        stack.close()
        redis.stop()


def echo_scenario(args: argparse.Namespace, out: Path) -> None:
    with bench_stack("split") as (redis, stack):
        iface = stack.interface(wait=False, BENCH_LAYER="fleet")
        worker = stack.worker(wait=False, BENCH_LAYER="fleet")
        stack.wait_ready(iface, worker)
        redis_pid = redis.nodes[0].pid
        assert redis_pid is not None
        pids = {"interface": iface.pid, "worker": worker.pid, "redis-server": redis_pid}

        # echo_load: 1 s warm-up, then two phases of `half` s each; with the default --rate
        # both are closed loop. The sampled window starts after the warm-up and ends before.
        half = (args.seconds + 4) / 2
        load: dict[str, Any] = {}

        def drive() -> None:
            try:
                load.update(asyncio.run(echo_load([iface.url], args.clients, half, args.rate)))
            except BaseException as exc:  # reported below, after the window
                load["error"] = exc

        driver = threading.Thread(target=drive, name="echo-load", daemon=True)
        driver.start()
        deadline = time.monotonic() + 60
        while metric(iface, MESSAGES_OUT, direction="out") == 0:
            if time.monotonic() > deadline or not driver.is_alive():
                raise RuntimeError(f"no echo in 60 s: {load.get('error')}\n{iface.tail()}")
            time.sleep(0.1)
        time.sleep(1.5)  # past the warm-up

        seconds = max(1, round(args.seconds))
        samplers = [Sampler(name, pid, out / f"echo.{name}.collapsed")
                    for name, pid in pids.items() if name != "redis-server"]
        binary = py_spy_binary()
        msgs0 = metric(iface, MESSAGES_OUT, direction="out")
        cpu0 = {name: cpu_split(pid) for name, pid in pids.items()}
        start = time.perf_counter()
        for sampler in samplers:
            sampler.start(binary, seconds, args.rate_hz)
        if all(s.proc is None for s in samplers):
            time.sleep(seconds)
        for sampler in samplers:
            sampler.wait()
        wall = time.perf_counter() - start
        msgs = metric(iface, MESSAGES_OUT, direction="out") - msgs0
        times = {name: tuple(b - a for a, b in zip(cpu0[name], cpu_split(pid), strict=True))
                 for name, pid in pids.items()}
        cpu = {name: sum(us) for name, us in times.items()}
        driver.join(timeout=args.seconds + 60)
        if "error" in load:
            print(f"echo load failed: {load['error']!r}", file=sys.stderr)

    print(f"== echo: {args.clients} clients echoing in closed loop through 1 interface + 1 "
          f"worker, {wall:.1f} s sampled")
    msgs_ = msgs or 1
    per_msg = ", ".join(f"{name} {c / msgs_ * 1e6:.1f}" for name, c in cpu.items())
    print(f"   {msgs / wall:,.0f} msgs/s ({msgs:,.0f} echoed); µs CPU/msg: {per_msg} "
          f"(total {sum(cpu.values()) / msgs_ * 1e6:.1f}); "
          f"CPU cores: {', '.join(f'{n} {c / wall:.2f}' for n, c in cpu.items())}; "
          f"kernel share: {', '.join(f'{n} {s[1] / (sum(s) or 1):.0%}' for n, s in times.items())}")
    for sampler in samplers:
        if sampler.error:
            print(f"   {sampler.name}: no profile: {sampler.error}", file=sys.stderr)
            print(f"  {sampler.name}: no profile (py-spy: see above)\n")
            continue
        rows, samples = collapsed_rows(sampler.out)
        errors = re.search(r"Errors: (\d+)", sampler.log.read_text(errors="replace"))
        print(f"-- echo/{sampler.name} (pid {sampler.pid}): "
              f"{cpu[sampler.name] / msgs_ * 1e6:.1f} µs CPU/msg, "
              f"{samples:,} py-spy samples on CPU"
              f" ({errors.group(1) if errors else '?'} unreadable: --nonblocking)")
        print_tables(rows, args.top, f"py-spy, {args.rate_hz} Hz, idle threads not counted")


# -- a broadcast to thousands of sockets, py-spy ------------------------------------------------

def broadcast_scenario(args: argparse.Namespace, out: Path) -> None:
    """``bench/split.py``'s broadcast: ``--sockets`` idle sockets on 2 interfaces, 2 workers,
    ``--broadcasts`` group_sends one after another while py-spy samples every interface and
    worker; CPU per broadcast per process from /proc."""
    with bench_stack("broadcast") as (redis, stack):
        ifaces = [stack.interface(wait=False, BENCH_LAYER="fleet") for _ in range(2)]
        workers = [stack.worker(wait=False, BENCH_LAYER="fleet") for _ in range(2)]
        stack.wait_ready(*ifaces, *workers)
        redis_pid = redis.nodes[0].pid
        assert redis_pid is not None
        pids = {**{f"interface-{n}": p.pid for n, p in enumerate(ifaces, 1)},
                **{f"worker-{n}": p.pid for n, p in enumerate(workers, 1)},
                "redis-server": redis_pid}
        # broadcast() waits 0.5 s before each send: py-spy does not sample idle threads. The
        # recording is interrupted once the broadcasts are done, before the sockets close.
        seconds = max(1, round(args.broadcasts * 2 + 10))
        samplers = [Sampler(name, pid, out / f"broadcast.{name}.collapsed")
                    for name, pid in pids.items() if name != "redis-server"]

        async def go() -> tuple[list[float], dict[str, tuple[float, float]], float]:
            layer = fleet_layer(redis.urls[0])
            socks = await open_many([p.url for p in ifaces], "/ws/bcast/", args.sockets)
            await asyncio.sleep(2)
            cpu0 = {name: cpu_split(pid) for name, pid in pids.items()}
            start = time.perf_counter()
            for sampler in samplers:
                sampler.start(py_spy_binary(), seconds, args.rate_hz)
            p95s = [await broadcast(layer, socks, n + 1) for n in range(args.broadcasts)]
            times = {name: tuple(b - a for a, b in zip(cpu0[name], cpu_split(pid), strict=True))
                     for name, pid in pids.items()}
            wall = time.perf_counter() - start
            for sampler in samplers:
                sampler.interrupt()
            for sock in socks:
                sock.close()
            await layer.close_pools()
            return p95s, times, wall  # type: ignore[return-value]

        p95s, times, wall = asyncio.run(go())
        for sampler in samplers:
            sampler.wait()

    n = args.broadcasts
    print(f"== broadcast: one group_send to {args.sockets:,} sockets on 2 interfaces + 2 workers, "
          f"{n} times in {wall:.1f} s")
    print(f"   p95 ms per broadcast: {', '.join(f'{p:.0f}' for p in p95s)}")
    print("   ms CPU per broadcast: " + ", ".join(
        f"{name} {sum(t) / n * 1000:.0f} (kernel {t[1] / (sum(t) or 1):.0%})"
        for name, t in times.items()))
    for sampler in samplers:
        if sampler.error:
            print(f"  {sampler.name}: no profile: {sampler.error}\n")
            continue
        rows, samples = collapsed_rows(sampler.out)
        print(f"-- broadcast/{sampler.name} (pid {sampler.pid}): {samples:,} py-spy samples on CPU")
        print_tables(rows, args.top, f"py-spy, {args.rate_hz} Hz, idle threads not counted")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/profiles.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["layer", "echo", "broadcast"], help="one scenario only")
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="echo: seconds sampled by py-spy")
    parser.add_argument("--out", type=Path, help="directory for the raw profiles "
                        "(.pstats, collapsed stacks); default a temp dir")
    parser.add_argument("--messages", type=int, default=20_000,
                        help="layer: messages per throughput run")
    parser.add_argument("--repeats", type=int, default=5, help="layer: group_send repeats")
    parser.add_argument("--clients", type=int, default=50, help="echo: WebSocket clients")
    parser.add_argument("--rate", type=float, default=float("inf"),
                        help="echo: per-client pace of echo_load's first phase "
                        "(default: unpaced, closed loop throughout)")
    parser.add_argument("--rate-hz", type=int, default=100,
                        help="echo, broadcast: py-spy samples/s")
    parser.add_argument("--sockets", type=int, default=5000, help="broadcast: idle sockets")
    parser.add_argument("--broadcasts", type=int, default=10, help="broadcast: group_sends")
    parser.add_argument("--loop", choices=EVENT_LOOPS, default="auto",
                        help="event loop, as CHANNELS_FLEET_LOOP (auto: uvloop where installed)")
    args = parser.parse_args(argv)
    print(f"event loop: {eventloop.use(args.loop)}", flush=True)
    os.environ["CHANNELS_FLEET_LOOP"] = args.loop  # the interface and worker it starts

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"raw profiles in {out}", flush=True)
    if args.only in (None, "layer"):
        layer_scenarios(args, out)
    if args.only in (None, "echo"):
        echo_scenario(args, out)
    if args.only in (None, "broadcast"):
        broadcast_scenario(args, out)
    print(f"load average {os.getloadavg()[0]:.2f} (shared machine: figures move between runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
