"""The resume bench's processes: interfaces (with a resume key) and workers of the split test
project, the balancer in front of the interfaces, and the faults: rolls and kills."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from channels_fleet.dev.stack import FleetStack, ServiceProcess

HERE = Path(__file__).resolve().parent


class BalancerProcess:
    """``balancer.py`` as a child: ``point(ifaces)`` sends it the interfaces to use."""

    def __init__(self) -> None:
        self.popen = subprocess.Popen([sys.executable, str(HERE / "balancer.py")],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.popen.stdout is not None
        self.port = int(self.popen.stdout.readline())

    def point(self, ifaces: list[ServiceProcess]) -> None:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        pairs = " ".join(f"{i.port}:{i.metrics_port}" for i in ifaces)
        self.popen.stdin.write(f"backends {pairs}\n")
        self.popen.stdin.flush()
        if self.popen.stdout.readline().strip() != "ok":
            raise RuntimeError("the balancer did not take its backends")

    def cpu_seconds(self) -> float:
        """Its user + system CPU so far (from /proc: it has not exited)."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)


def scrape(proc: ServiceProcess) -> dict[str, float]:
    """The channels_fleet_* samples of ``proc`` (``name{labels}`` -> value); {} if it is gone."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics",
                                    timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r"^(channels_fleet_[a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


class Fleet:
    """The bench's interfaces and workers, the balancer pointed at the live interfaces, and
    the last metrics of each process (a killed one keeps what was last scraped)."""

    def __init__(self, stack: FleetStack, key: str) -> None:
        self.stack = stack
        self.key = key
        self.ifaces: list[ServiceProcess] = []
        self.workers: list[ServiceProcess] = []
        self.balancer = BalancerProcess()
        self.metrics: dict[str, dict[str, float]] = {}
        self.events: list[str] = []
        self.started = 0  # names stay unique (the stack's reuse a retired one's)

    def _name(self, kind: str) -> str:
        self.started += 1
        return f"{kind}-{self.started}"

    def interface(self) -> ServiceProcess:
        return self.stack.interface(wait=False, name=self._name("interface"),
                                    CHANNELS_FLEET_RESUME_KEY=self.key)

    def worker(self) -> ServiceProcess:
        return self.stack.worker(wait=False, name=self._name("worker"))

    def start(self, interfaces: int, workers: int) -> None:
        self.ifaces = [self.interface() for _ in range(interfaces)]
        self.workers = [self.worker() for _ in range(workers)]
        self.stack.wait_ready(*self.ifaces, *self.workers)
        self.balancer.point(self.ifaces)

    def scrape_all(self) -> None:
        for proc in (*self.ifaces, *self.workers):
            if got := scrape(proc):
                self.metrics[proc.name] = got

    def rss(self) -> str:
        """Each live process's resident memory, in MB."""
        out = []
        for proc in (*self.ifaces, *self.workers):
            status = Path(f"/proc/{proc.pid}/status").read_text()
            kb = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
            out.append(f"{proc.name} {kb // 1024}")
        return ", ".join(out)

    def total(self, sample: str, kind: str) -> float:
        """``sample`` summed over every ``kind`` process the bench ran (last scrape each)."""
        return sum(m.get(sample, 0.0) for name, m in self.metrics.items()
                   if name.startswith(kind))

    def labelled(self, name: str, kind: str) -> dict[str, float]:
        """``name{label="x"}`` summed per label value over the ``kind`` processes, non-zero."""
        out: dict[str, float] = {}
        for proc, samples in self.metrics.items():
            if not proc.startswith(kind):
                continue
            for sample, value in samples.items():
                if sample.startswith(name + "{") and value:
                    label = sample.split('"')[1]
                    out[label] = out.get(label, 0.0) + value
        return out

    async def roll(self, slot: int) -> None:
        """A new interface ready, taken into the balancer, then SIGTERM to the old (it
        drains: closes its sockets with 1001, paced)."""
        old, new = self.ifaces[slot], self.interface()
        await asyncio.to_thread(new.wait_ready)
        self.ifaces[slot] = new
        self.balancer.point(self.ifaces)
        self.scrape_all()
        code = await asyncio.to_thread(self.stack.retire, old, 60)
        self.events.append(f"rolled {old.name} -> {new.name} (exit {code})")

    async def kill_interface(self, slot: int) -> None:
        """SIGKILL, out of the balancer (its endpoint goes), then a replacement."""
        old = self.ifaces[slot]
        self.scrape_all()
        self._kill(old)
        self.balancer.point([i for i in self.ifaces if i is not old])
        self.ifaces[slot] = self.interface()
        await asyncio.to_thread(self.ifaces[slot].wait_ready)
        self.balancer.point(self.ifaces)
        self.events.append(f"killed {old.name} -> {self.ifaces[slot].name}")

    async def kill_worker(self, slot: int) -> None:
        old = self.workers[slot]
        self.scrape_all()
        self._kill(old)
        self.workers[slot] = self.worker()
        await asyncio.to_thread(self.workers[slot].wait_ready)
        self.events.append(f"killed {old.name} -> {self.workers[slot].name}")

    def _kill(self, proc: ServiceProcess) -> None:
        proc.signal(signal.SIGKILL)
        proc.popen.wait(10)
        self.stack.procs.remove(proc)  # its exit is the fault, not a failure

    def stop(self) -> None:
        self.balancer.stop()
        self.stack.stop()
