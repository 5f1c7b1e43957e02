"""Benchmark: scale on one node, the monolith (Daphne + channels_redis) against the split, same run.

Prints one line, then the absolute figures of both sides:

    scale: storm5k_ratio=X sockets_per_interface=N broadcast20k_p95_ms=N kb_per_socket_20k=X
           burst10k_ratio=X fd_cap=N growth_refusals=N

(one line; the first four fields are the targets', the ones after were added since.)

- storm5k_ratio: 5,000 clients connect at once (as after a rollout); the time from the first
  connect to the last client accepted and echoed once, ours over the monolith's (one
  interface + one worker against one Daphne; median of the rounds, which alternate). A client
  refused or cut tries again after 0.5-1.5 s, as a reconnecting client does.
- burst10k_ratio: the same for 10,000 clients that each load client process opens back to
  back, as fast as it can (a ramp, not one instant); a client refused or cut backs off as a
  client library does (0.5 s doubling to 8 s, jittered) and tries again. Refusals are counted
  by cause (``close 1013``, ``HTTP 503``, ``timeout``, ...) for both sides.
- sockets_per_interface: idle sockets grown on one interface (steps of 2,500) while 50 active
  clients echo at 10 messages/s each; the largest count at which their echo p99 stays
  <= 100 ms. Each step's sockets connect as the burst's do (refused ones back off and retry,
  for at most 60 s) and echo once, so a socket counts only once a worker took it. The steps
  stop at the process's file-descriptor limit (``fd_cap``: the hard limit, less the process's
  own descriptors and the active clients'): no process can hold more. ``growth_refusals``:
  the refused tries over all of ours' steps. Each step's line also says where an echo's
  time could have gone in its window: the machine's idle CPU, our interface's and worker's
  event-loop stalls over 100 ms, how late the load client's own loop ran, and the machine's
  TCP retransmits.
- broadcast20k_p95_ms: one group_send to 20,000 sockets over 2 interfaces and 2 workers, p95 of
  (arrival - send), arrival stamped when the frame's bytes reach the client process; median of
  the repeats. The monolith's figure beside it: 2 Daphne processes (one cannot hold 20,000
  sockets under this machine's descriptor limit) on channels_redis.
- kb_per_socket_20k: the interfaces' RSS growth per idle socket, 20,000 sockets.

The load client is ``splitbench/swarm.py``: raw asyncio WebSockets in several processes.
File-descriptor limits are raised here only (the servers and clients started inherit them).
Every process started here dies with it.

    make bench-scale                       # the full run (minutes; 2 x 20,000 sockets)
    .venv/bin/python bench/scale.py --quick
    .venv/bin/python bench/scale.py --only storm --storm 5000 --rounds 1   # profiling one part
    .venv/bin/python bench/scale.py --only burst --burst 10000 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from split import APP, fleet_layer, fleet_stack, raise_fd_limit, redis_layer, rss_kb, wait_http

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.ports import free_ports
from channels_fleet.dev.stack import FleetStack, ServiceProcess
from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.process import die_with_parent

sys.path.insert(0, str(Path(__file__).resolve().parent / "splitbench"))
from swarm import Swarm, split  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.scrape import metric  # noqa: E402  (the tests' /metrics reader)

P99_LIMIT_MS = 100.0
#: A storm's or a burst's clients give up after this long: a side with clients left is
#: reported as ">120 s".
STORM_TIMEOUT = 120.0
#: A growth step's clients give up after this long: the step then holds fewer than it aims at.
STEP_TIMEOUT = 60.0
#: How each phase's clients come and how a refused one waits before its next try. A storm's
#: wait 0.5-1.5 s every time (the storm figures of docs/benchmarks.md were measured so);
#: the others back off as a client library does, 0.5 s doubling to 8 s, jittered.
ARRIVALS: dict[str, dict[str, Any]] = {
    "storm": {"back_to_back": False, "backoff": {"first": 1.0, "factor": 1.0, "most": 1.0}},
    "burst": {"back_to_back": True, "backoff": {"first": 0.5, "factor": 2.0, "most": 8.0}},
}
BACKLOG = InterfaceSettings.backlog  # the dataclass default
#: Descriptors kept free in a server at the last growth step (Redis connections, logs, ...).
FD_MARGIN = 30


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], timeout: float = 60) -> None:
    """Wait until ``pids`` are nearly idle (closes and disconnect handlers done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        time.sleep(0.5)
        if cpu_seconds(pids) - before < 0.03 * len(pids):
            return


#: An event-loop tick this late is a stall that alone would put an echo over the p99 limit.
STALL_SECONDS = 0.1


def loop_stalls(procs: dict[str, ServiceProcess]) -> list[int]:
    """Per process (by its ``component`` label), how many of its event-loop lag probes (every
    0.25 s) so far ran more than ``STALL_SECONDS`` late."""
    lag = "channels_fleet_event_loop_lag_seconds"
    return [round(metric(proc, f"{lag}_count")
                  - metric(proc, f"{lag}_bucket", component=component, le=str(STALL_SECONDS)))
            for component, proc in procs.items()]


def cpu_idle() -> tuple[float, float]:
    """This machine's idle and total CPU time so far (``/proc/stat``, in ticks)."""
    ticks = [float(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)  # idle + iowait


def tcp_retransmits() -> int:
    """TCP segments this machine retransmitted so far (``/proc/net/snmp``): on loopback, a
    retransmit waits out the RTO (200 ms at least), whoever's socket it was."""
    names, values = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
                     if line.startswith("Tcp:")]
    return int(values[names.index("RetransSegs")])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def merged(answers: list[dict[str, Any]], key: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for answer in answers:
        total.update(answer[key])
    return dict(total)


def refusals(by_cause: dict[str, int]) -> str:
    """``{"close 1013": 12, "timeout": 1}`` as ``13 (close 1013: 12, timeout: 1)``."""
    causes = ", ".join(f"{cause}: {n}" for cause, n in sorted(by_cause.items()))
    return f"{sum(by_cause.values())} ({causes})" if causes else "0"


def connect(swarm: Swarm, url: str, count: int, kind: str, timeout: float,
            hold: bool = False) -> tuple[float, list[dict[str, Any]]]:
    """``count`` clients connect to ``url``, each echoing once, arriving as ``kind`` says
    (ARRIVALS), shared among the swarm's processes; their start time and answers."""
    at = time.perf_counter() + 1.0
    answers = swarm.each([{"op": "connect", "url": url + "/ws/echo/", "count": n, "at": at,
                           "timeout": timeout, "hold": hold, **ARRIVALS[kind]}
                          for n in split(count, len(swarm))])
    return at, answers


# -- storm and burst -----------------------------------------------------------------------


def rush(swarm: Swarm, url: str, count: int, kind: str, pids: list[int]) -> dict[str, Any]:
    """``count`` clients on ``url`` as a storm or a burst: seconds from the first connect to
    the last echo."""
    at, answers = connect(swarm, url, count, kind, STORM_TIMEOUT)
    done = sorted(t - at for a in answers for t in a["done"])
    unfinished = sum(a["unfinished"] for a in answers)
    settle(pids)
    return {"seconds": done[-1] if done and not unfinished else math.inf,
            "p50_s": statistics.median(done) if done else math.inf,
            "unfinished": unfinished, "failures": merged(answers, "failures")}


def rush_phase(swarm: Swarm, sides: dict[str, tuple[str, list[int]]], count: int, kind: str,
               rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, (url, pids) in sides.items():
            runs[name].append(rush(swarm, url, count, kind, pids))
            run = runs[name][-1]
            print(f"  {kind} {name}: {seconds(run['seconds'])}, "
                  f"refusals {refusals(run['failures'])}", flush=True)
    return {name: {"seconds": statistics.median(r["seconds"] for r in rs), "rounds": rs}
            for name, rs in runs.items()}


# -- growth --------------------------------------------------------------------------------


def echo_p99(swarm: Swarm, url: str, clients: int, seconds: float, rate: float
             ) -> dict[str, Any]:
    answer = swarm.call(0, {"op": "echo", "url": url + "/ws/echo/", "clients": clients,
                            "seconds": seconds, "rate": rate})
    ms = sorted(answer["ms"])
    return {"p50_ms": statistics.median(ms) if ms else math.inf,
            "p99_ms": ms[int(len(ms) * 0.99)] if ms else math.inf,
            "samples": len(ms), "errors": answer["errors"],
            "client_stalls": answer["client_stalls"],
            "client_max_late_ms": answer["client_max_late_ms"]}


def growth_steps(step: int, most: int, fd_cap: int) -> list[int]:
    steps = list(range(step, most + 1, step))
    capped = [s for s in steps if s < fd_cap]
    return capped + [fd_cap] if len(capped) < len(steps) else capped


def grow(swarm: Swarm, url: str, count: int) -> dict[str, Any]:
    """``count`` more idle sockets on ``url``, connected as clients do (a burst, each refused
    one backing off) and echoed once, so only those a worker took are held."""
    _, answers = connect(swarm, url, count, "burst", STEP_TIMEOUT, hold=True)
    return {"held": sum(a["held"] for a in answers), "refusals": merged(answers, "failures"),
            "unfinished": sum(a["unfinished"] for a in answers)}


def growth_phase(swarm: Swarm, sides: dict[str, tuple[str, list[int]]], args: argparse.Namespace,
                 fd_limit: int, watched: dict[str, dict[str, ServiceProcess]]) -> dict[str, Any]:
    """Idle sockets grown side by side (the sides alternate at each step) with the active
    clients' echo p99 measured at each; a side stops at its first step over the limit.

    Beside each echo window: the machine's idle CPU and TCP retransmits in it, the load
    client's own lateness and, for a side with ``watched`` processes, how many event-loop stalls
    (> ``STALL_SECONDS``) each process had in it: a p99 over the limit is told from a stalled
    server, a late client, a busy machine or a lost segment."""
    out: dict[str, Any] = {}
    for name, (_, pids) in sides.items():
        fd_cap = fd_limit - open_fds(pids[0]) - args.active - FD_MARGIN
        out[name] = {"fd_cap": fd_cap, "held": 0, "best": 0, "steps": [], "stopped": False,
                     "rss_kb_0": rss_kb(pids[0]),
                     "plan": growth_steps(args.step, args.max_sockets, fd_cap)}
    for i in range(max(len(s["plan"]) for s in out.values())):
        for name, (url, pids) in sides.items():
            side = out[name]
            if side["stopped"] or i >= len(side["plan"]):
                continue
            target = side["plan"][i]
            opened = grow(swarm, url, target - side["held"])
            side["held"] = opened["held"]
            settle(pids)
            procs = watched.get(name, {})
            stalls_before, (idle_before, total_before) = loop_stalls(procs), cpu_idle()
            retransmits_before = tcp_retransmits()
            echo = echo_p99(swarm, url, args.active, args.echo_seconds, args.rate)
            retransmits = tcp_retransmits() - retransmits_before
            idle_after, total_after = cpu_idle()
            idle = (idle_after - idle_before) / max(total_after - total_before, 1)
            stalls = [b - a for a, b in zip(stalls_before, loop_stalls(procs), strict=True)]
            rss = rss_kb(pids[0])
            side["steps"].append({"sockets": side["held"], **echo, "rss_kb": rss,
                                  "refusals": opened["refusals"],
                                  "unfinished": opened["unfinished"],
                                  "cpu_idle": round(idle, 2), "loop_stalls": stalls,
                                  "tcp_retransmits": retransmits})
            ok = echo["p99_ms"] <= P99_LIMIT_MS and side["held"] >= target
            stalled = f", loop stalls {stalls}" if procs else ""
            print(f"  {name} {side['held']} idle: echo p99 {echo['p99_ms']:.1f} ms (machine "
                  f"{idle:.0%} idle{stalled}, client late up to {echo['client_max_late_ms']:.0f} "
                  f"ms, {retransmits} TCP retransmits); refusals {refusals(opened['refusals'])}, "
                  f"unfinished {opened['unfinished']}", flush=True)
            if ok:
                side["best"] = side["held"]
                side["kb_per_socket"] = (rss - side["rss_kb_0"]) / max(side["held"], 1)
            else:
                side["stopped"] = True
        # Both sides hold their sockets until the phase ends: each step's echo runs while
        # the other side's idle sockets are open too, alike for both.
    swarm.all(op="close")
    for _, pids in sides.values():
        settle(pids)
    return out


# -- broadcast -----------------------------------------------------------------------------


async def broadcasts(swarm: Swarm, layer: Any, repeats: int, timeout: float) -> list[float]:
    p95s = []
    for nth in range(1, repeats + 1):
        await asyncio.sleep(1.0)
        swarm.send([{"op": "arrivals", "nth": nth, "timeout": timeout}] * len(swarm))
        await asyncio.sleep(0.3)  # each client armed (arrivals are stamped either way)
        sent = time.perf_counter()
        await layer.group_send("bcast", {"type": "bench.message", "text": "tick"})
        answers = await asyncio.to_thread(swarm.answers)
        delays = sorted((t - sent) * 1000 if t is not None else math.inf
                        for a in answers for t in a["times"])
        p95s.append(delays[max(0, int(len(delays) * 0.95) - 1)])
    return p95s


def broadcast_side(name: str, swarm: Swarm, layer: Any, urls: list[str], pids: list[int],
                   count: int, repeats: int) -> dict[str, Any]:
    before = sum(rss_kb(pid) for pid in pids)
    opened = swarm.each([{"op": "open", "urls": [u + "/ws/bcast/" for u in urls], "count": n}
                         for n in split(count, len(swarm))])
    held = sum(a["held"] for a in opened)
    settle(pids)
    after = sum(rss_kb(pid) for pid in pids)
    p95s = asyncio.run(broadcasts(swarm, layer, repeats, timeout=120))
    print(f"  broadcast {name}: p95 {', '.join(f'{p:.0f}' for p in p95s)} ms on {held} sockets",
          flush=True)
    swarm.all(op="close")
    settle(pids)
    return {"sockets": held, "open_failed": merged(opened, "failed"),
            "open_seconds": max(a["seconds"] for a in opened),
            "p95_ms": statistics.median(p95s), "p95s_ms": [round(p, 1) for p in p95s],
            "kb_per_socket": (after - before) / max(held, 1)}


# -- the run -------------------------------------------------------------------------------


def daphne(stack: FleetStack, defaults: bool) -> tuple[ServiceProcess, str]:
    """The monolith: Daphne running the consumers on channels_redis. Unless ``defaults``, with
    the interface's listen backlog and no access log, as our interface runs (Daphne's own
    defaults, a backlog of 50 and a line per connection, lose a storm to the kernel)."""
    (port,) = free_ports(1)
    if defaults:
        where = ["-b", "127.0.0.1", "-p", str(port)]
    else:
        where = ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={BACKLOG}", "-v", "0"]
    proc = stack.spawn("monolith", [sys.executable, "-m", "daphne", *where, APP],
                       BENCH_LAYER="channels_redis")
    return proc, f"ws://127.0.0.1:{port}"


PHASES = ("storm", "burst", "growth", "broadcast")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/scale.py")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: storm 500, burst 500, growth to 1,000, "
                             "broadcast 1,000")
    parser.add_argument("--only", choices=PHASES, help="run one phase (profiling)")
    parser.add_argument("--storm", type=int, default=5000, help="clients in the storm")
    parser.add_argument("--burst", type=int, default=10000, help="clients in the burst")
    parser.add_argument("--rounds", type=int, default=3,
                        help="storm and burst rounds (alternating)")
    parser.add_argument("--step", type=int, default=2500, help="idle sockets added per step")
    parser.add_argument("--max-sockets", type=int, default=20000, help="last growth step")
    parser.add_argument("--active", type=int, default=50, help="echoing clients")
    parser.add_argument("--echo-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=10.0, help="echoes/s per active client")
    parser.add_argument("--broadcast", type=int, default=20000, help="broadcast sockets")
    parser.add_argument("--repeats", type=int, default=3, help="broadcasts per side")
    parser.add_argument("--clients", type=int, default=4, help="load client processes")
    parser.add_argument("--daphne-defaults", action="store_true",
                        help="the monolith with Daphne's defaults (backlog 50, access log)")
    args = parser.parse_args(argv)
    if args.quick:
        args.storm, args.burst, args.rounds, args.step, args.max_sockets = 500, 500, 1, 250, 1000
        args.broadcast, args.echo_seconds = 1000, 2.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    fd_limit = raise_fd_limit()
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    redis = LocalRedis(tmp / "redis", masters=1, replicas=0).start()
    url = redis.urls[0]
    stack = fleet_stack(url, tmp)
    # One worker holds the growth phase's sockets; the work queue keeps its default bound
    # (bench-split's 10,000 lets a storm queue envelopes for longer than the claim timeout).
    stack.env["CHANNELS_FLEET_CONCURRENCY"] = str(2 * args.max_sockets)
    del stack.env["CHANNELS_FLEET_CONNECT_CAPACITY"]
    swarm = Swarm(args.clients, preexec_fn=die_with_parent)
    results: dict[str, Any] = {}
    phases = [args.only] if args.only else PHASES
    try:
        mono, mono_url = daphne(stack, args.daphne_defaults)
        iface = stack.interface(wait=False, BENCH_LAYER="fleet")
        worker = stack.worker(wait=False, BENCH_LAYER="fleet")
        wait_http(mono_url.replace("ws:", "http:") + "/")
        stack.wait_ready(iface, worker)
        # One Daphne against one interface + one worker: what a storm or a growing socket
        # count puts on one front process.
        sides = {"monolith": (mono_url, [mono.pid]),
                 "ours": (iface.url, [iface.pid, worker.pid])}
        print(f"pids: monolith {mono.pid}, interface {iface.pid}, worker {worker.pid}, "
              f"swarm {swarm.pids}", flush=True)
        if "storm" in phases:
            results["storm"] = rush_phase(swarm, sides, args.storm, "storm", args.rounds)
        if "burst" in phases:
            results["burst"] = rush_phase(swarm, sides, args.burst, "burst", args.rounds)
        if "growth" in phases:
            results["growth"] = growth_phase(
                swarm, sides, args, fd_limit,
                {"ours": {"interface": iface, "worker": worker}})
        if "broadcast" in phases:
            mono2, mono2_url = daphne(stack, args.daphne_defaults)
            iface2 = stack.interface(wait=False, BENCH_LAYER="fleet")
            worker2 = stack.worker(wait=False, BENCH_LAYER="fleet")
            wait_http(mono2_url.replace("ws:", "http:") + "/")
            stack.wait_ready(iface2, worker2)
            print(f"pids: monolith-2 {mono2.pid}, interface-2 {iface2.pid}, "
                  f"worker-2 {worker2.pid}", flush=True)
            results["broadcast"] = {
                "ours": broadcast_side("ours", swarm, fleet_layer(url),
                                       [iface.url, iface2.url], [iface.pid, iface2.pid],
                                       args.broadcast, args.repeats),
                "monolith": broadcast_side("monolith", swarm, redis_layer(url),
                                           [mono_url, mono2_url], [mono.pid, mono2.pid],
                                           args.broadcast, args.repeats),
            }
    finally:
        swarm.stop()
        stack.close()
        redis.stop()
    report(results, args, fd_limit, load_start)
    return 0


def ratio(ours: float, monolith: float) -> str:
    """Ours over the monolith's; a side that did not finish in STORM_TIMEOUT took longer,
    so the ratio is bounded (``<0.08``), or unknown when neither finished."""
    if math.isinf(ours) and math.isinf(monolith):
        return "n/a"
    if math.isinf(monolith):
        return f"<{ours / STORM_TIMEOUT:.2f}"
    if math.isinf(ours):
        return f">{STORM_TIMEOUT / monolith:.2f}"
    return f"{ours / monolith:.2f}"


def seconds(value: float) -> str:
    return f">{STORM_TIMEOUT:.0f} s" if math.isinf(value) else f"{value:.1f} s"


def rush_report(kind: str, count: int, result: dict[str, Any]) -> tuple[str, list[str]]:
    """A storm's or a burst's summary field and both sides' lines."""
    field = f"{kind}{count / 1000:g}k_ratio=" + ratio(result["ours"]["seconds"],
                                                      result["monolith"]["seconds"])
    lines = []
    for name in ("monolith", "ours"):
        rounds = result[name]["rounds"]
        lines.append(f"  {kind} {count} clients, {name}: {seconds(result[name]['seconds'])} "
                     f"(median of {', '.join(seconds(r['seconds']) for r in rounds)}; "
                     f"unfinished {[r['unfinished'] for r in rounds]}; "
                     f"refusals {'; '.join(refusals(r['failures']) for r in rounds)})")
    return field, lines


def growth_report(result: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """The growth's summary field, its fields after the first four, and both sides' lines."""
    ours = result["ours"]
    total = {name: merged(side["steps"], "refusals") for name, side in result.items()}
    extra = [f"fd_cap={ours['fd_cap']}", f"growth_refusals={sum(total['ours'].values())}"]
    lines = []
    for name in ("monolith", "ours"):
        side = result[name]
        steps = ", ".join(f"{st['sockets']}: {st['p99_ms']:.0f}" for st in side["steps"])
        by_step = ", ".join(str(sum(st["refusals"].values())) for st in side["steps"])
        lines.append(f"  idle sockets, {name}: {side['best']} with echo p99 <= "
                     f"{P99_LIMIT_MS:.0f} ms (file-descriptor cap {side['fd_cap']}; "
                     f"p99 ms by step: {steps}; refusals by step: {by_step}; "
                     f"refusals {refusals(total[name])})")
    return [f"sockets_per_interface={ours['best']}"], extra, lines


def broadcast_report(result: dict[str, Any], count: int) -> tuple[list[str], list[str]]:
    n = f"{count / 1000:g}"
    fields = [f"broadcast{n}k_p95_ms={result['ours']['p95_ms']:.0f}",
              f"kb_per_socket_{n}k={result['ours']['kb_per_socket']:.1f}"]
    lines = []
    for name in ("monolith", "ours"):
        side = result[name]
        lines.append(f"  broadcast to {side['sockets']} sockets, {name}: p95 "
                     f"{side['p95_ms']:.0f} ms (repeats {side['p95s_ms']}), "
                     f"{side['kb_per_socket']:.1f} KB per socket; "
                     f"open failures {side['open_failed']}")
    return fields, lines


def report(results: dict[str, Any], args: argparse.Namespace, fd_limit: int,
           load_start: tuple[float, float, float]) -> None:
    # The summary line's first fields are the four the targets name, in their order (the runs
    # in docs/benchmarks.md compare them); the fields added since follow.
    fields, extra, lines = [], [], []
    if "storm" in results:
        field, detail = rush_report("storm", args.storm, results["storm"])
        fields.append(field)
        lines += detail
    if "burst" in results:
        field, detail = rush_report("burst", args.burst, results["burst"])
        extra.append(field)
        lines += detail
    if "growth" in results:
        first, after, detail = growth_report(results["growth"])
        fields += first
        extra += after
        lines += detail
    if "broadcast" in results:
        first, detail = broadcast_report(results["broadcast"], args.broadcast)
        fields += first
        lines += detail
    print("scale: " + " ".join(fields + extra))
    print("\n".join(lines))
    print(f"  load average: start {load_start}, end {os.getloadavg()}; fd limit {fd_limit}")
    for growth in results.get("growth", {}).values():
        growth.pop("plan", None)
    print(json.dumps({**results, "fd_limit": fd_limit,
                      "load_average": {"start": load_start, "end": os.getloadavg()},
                      "args": vars(args)}, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
