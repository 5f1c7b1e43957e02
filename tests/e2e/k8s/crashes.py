"""The crash scenarios of make e2e-k8s: a process of the release killed in its container with
SIGKILL (as the kernel's OOM killer or a segfault ends one: no SIGTERM, no drain, no preStop),
while the load of nodes.Load runs; the kubelet restarts the container in place.

- a worker: its sockets stay open (the interfaces re-home them once its heartbeat lapses and
  replay what it had not acknowledged); nothing lost silently, the other workers' clients
  untouched;
- an interface: its clients see the socket end (1006), reconnect through the Service and are
  served; the workers, once its heartbeat lapses, end its connections' consumers, whose
  disconnect handlers run (the demo's: a `presence.leave` to the room, which the room's other
  members see).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from .. import scenarios
from ..kube_stack import KubeStack
from .nodes import Load, Prober, placement, pod_logs, scale
from .release import Release, is_ready

# SIGKILL the service in an app container: tini is PID 1 and the service its child (a process
# run by `kubectl exec` has no parent inside the container). tini exits with the service's
# status and the kubelet restarts the container.
KILL_SERVICE = ('for p in /proc/[0-9]*; do read -r pid comm state ppid rest < "$p/stat" '
                '|| continue; [ "$ppid" = 1 ] && kill -9 "$pid"; done; true')

RESTART_WITHIN = 120.0  # seconds for the killed container to be restarted and ready


def restart_count(release: Release, pod: str) -> int:
    status = json.loads(release.kubectl("get", "pod", pod, "-o", "json"))["status"]
    return sum(c.get("restartCount", 0) for c in status.get("containerStatuses", []))


def kill_service(release: Release, pod: str) -> int:
    """SIGKILL `pod`'s service; its restart count before the kill."""
    before = restart_count(release, pod)
    release.exec(pod, "sh", "-c", KILL_SERVICE, check=False)  # may die with the container
    return before


async def restarted(release: Release, pod: str, before: int, t0: float) -> float:
    """Seconds from t0 until `pod`'s container has restarted and the pod is ready again."""

    async def back() -> bool:
        item = json.loads(await asyncio.to_thread(
            release.kubectl, "get", "pod", pod, "-o", "json"))
        counts = sum(c.get("restartCount", 0)
                     for c in item["status"].get("containerStatuses", []))
        return counts > before and is_ready(item)

    ok = await scenarios.eventually(back, RESTART_WITHIN, 1)
    assert ok, f"{pod} was not restarted and ready {RESTART_WITHIN:.0f} s after its SIGKILL"
    return time.monotonic() - t0


@dataclass
class Target:
    """The pod a crash scenario kills, and the probers it serves and does not serve."""

    pod: str
    hit: list[Prober]
    others: list[Prober]

    @classmethod
    async def busiest(cls, release: Release, load: Load, component: str) -> Target:
        """The `component` pod (interface or worker) serving the most probers now."""
        homes = await load.homes(set(placement(release)))
        serving = [home[0 if component == "interface" else 1] for home in homes]
        pod = max(ready_pods(release, component), key=serving.count)
        pairs = list(zip(load.probers, serving, strict=True))
        return cls(pod, [p for p, s in pairs if s == pod], [p for p, s in pairs if s != pod])

    def figures(self) -> dict[str, Any]:
        return {"probers_on_it": len(self.hit), "others": len(self.others),
                "closes_on_it": sorted(c for p in self.hit for c in p.closes),
                "closes_others": sorted(c for p in self.others for c in p.closes)}


def served_again_s(probers: list[Prober], t0: float) -> float:
    return max((p.served_again_after(t0) for p in probers), default=0.0)


async def wait_served(probers: list[Prober], t0: float, timeout: float) -> float:
    while math.isinf(served_again_s(probers, t0)) and time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.5)
    return served_again_s(probers, t0)


def ready_pods(release: Release, name: str) -> set[str]:
    return {p["metadata"]["name"] for p in release.pods(f"app.kubernetes.io/component={name}")
            if is_ready(p) and not p["metadata"].get("deletionTimestamp")}


async def worker_crash_under_load(release: Release, stack: KubeStack, out: dict[str, Any]
                                  ) -> None:
    """SIGKILL the worker serving the most probers. Holds: its probers are not disconnected
    (re-homed) and lose nothing (`worker_crash_lost_silently`: requests unanswered on an open
    socket); the probers of the other workers neither close nor lose anything
    (`worker_crash_collateral_lost`); the broadcast stream's listeners miss nothing
    (`worker_crash_missed_in_rehome_window`). `out` gets the figures before the checks run."""
    if len(ready_pods(release, "worker")) < 2:
        await asyncio.to_thread(scale, release, "worker", 2)  # the earlier scenarios left one
    load = Load(stack)
    await load.start()
    try:
        for _ in range(5):  # which worker claims a socket is up to the workers
            target = await Target.busiest(release, load, "worker")
            if len(target.others) >= 2:
                break
            await load.add_probers(8, load.rooms[0])
        victim, hit, others = target.pod, target.hit, target.others
        with pod_logs(release, "worker-crash"):
            before = await asyncio.to_thread(kill_service, release, victim)
            t0 = time.monotonic()  # the kill is in: the exec that sent it has returned
            served_s = await wait_served(hit, t0, 120)
            back_s = await restarted(release, victim, before, t0)
            await asyncio.sleep(3)  # traffic on the restarted worker too
            await load.stop()
        figures = load.figures()
        result = {"worker": victim, **target.figures(),
                  "served_again_s": round(served_s, 1), "restarted_s": round(back_s, 1),
                  "lost_silently": sum(p.lost for p in hit),
                  "collateral_lost": sum(p.lost for p in others),
                  # The stream's listeners on the killed worker are re-homed: what was
                  # broadcast to them meanwhile is replayed, not missed.
                  "missed_in_rehome_window": figures["broadcast_missed"], **figures}
        print(f"worker crash: {result}")
        out.update(result)
        await load.stream_works()
    finally:
        await load.close()
    assert hit and others, f"no prober on the killed worker, or none elsewhere: {result}"
    assert not math.isinf(served_s), f"the killed worker's probers not served again: {result}"
    assert result["lost_silently"] == 0, f"requests lost silently in the worker crash: {result}"
    assert result["collateral_lost"] == 0 and not result["closes_others"], (
        f"the other workers' clients were touched by the crash: {result}")
    assert not result["closes_on_it"], f"the killed worker's clients were disconnected: {result}"
    assert not result["listener_closes"] and result["missed_in_rehome_window"] == 0, (
        f"broadcasts missed by the stream's listeners in the worker crash: {result}")


def presence_leaves(prober: Prober) -> set[str]:
    """Channel names whose `presence.leave` this prober's socket has shown."""
    left = set()
    for frame in prober.client.frames:
        data = json.loads(frame)
        if data.get("type") == "presence" and "leave" in data:
            left.add(data["leave"]["id"])
    return left


async def interface_crash_under_load(release: Release, stack: KubeStack, out: dict[str, Any]
                                     ) -> None:
    """SIGKILL the interface serving the most probers. Holds: each of its probers sees its
    socket end once (1006), reconnects and is served (`interface_crash_recovered_s`: from the
    kill until every one is); the consumers of its old connections are ended on the workers,
    their disconnect handlers run (each old connection's `presence.leave` reaches a member of
    its room on another interface); the other interfaces' probers are untouched; nothing is
    lost silently. `out` gets the figures before the checks run."""
    load = Load(stack)
    await load.start()
    try:
        target = await Target.busiest(release, load, "interface")
        victim, hit, others = target.pod, target.hit, target.others
        # Each hit socket's consumer (its channel name) and a witness: a member of its room
        # on another interface, which sees the leave.
        gone = {p.last_status["me"]["id"]: p.client.room for p in hit}
        witnesses = {room: [p for p in others if p.client.room == room] for room in gone.values()}
        with pod_logs(release, "interface-crash"):
            before = await asyncio.to_thread(kill_service, release, victim)
            t0 = time.monotonic()  # the kill is in: the exec that sent it has returned
            recovered_s = await wait_served(hit, t0, 120)
            back_s = await restarted(release, victim, before, t0)

            def unseen() -> list[str]:
                return [channel for channel, room in gone.items() if witnesses[room]
                        and not any(channel in presence_leaves(w) for w in witnesses[room])]

            async def all_seen() -> bool:
                return not unseen()

            await scenarios.eventually(all_seen, 30, 0.5)
            left_s = time.monotonic() - t0
            await load.stop()
        figures = load.figures()
        witnessed = [c for c, room in gone.items() if witnesses[room]]
        result = {"interface": victim, **target.figures(),
                  "recovered_s": round(recovered_s, 1), "restarted_s": round(back_s, 1),
                  "disconnects_witnessed": len(witnessed), "leaves_unseen": len(unseen()),
                  "leaves_seen_by_s": round(left_s, 1), **figures}
        print(f"interface crash: {result}")
        out.update(result)
        await load.stream_works()
    finally:
        await load.close()
    assert hit and others, f"no prober on the killed interface, or none elsewhere: {result}"
    assert not math.isinf(recovered_s), f"the crashed interface's clients not served: {result}"
    assert all(p.closes == [1006] for p in hit), (
        f"the crashed interface's clients: closes {[p.closes for p in hit]} (expected [1006])")
    assert not result["closes_others"], f"other interfaces' clients disconnected: {result}"
    assert witnessed, f"no room of the crashed interface's clients has a member elsewhere: {result}"
    assert not unseen(), (f"consumers of the crashed interface whose disconnect handler did not "
                          f"run (no presence.leave seen): {unseen()}; {result}")
    assert figures["lost"] == 0, f"requests lost silently in the interface crash: {result}"
