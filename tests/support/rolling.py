"""Re-homing under load: echo sockets with steady numbered traffic while workers restart.

Shared by the re-home tests and ``bench/rehome.py``. Each ``Probe`` sends ``s<n>`` at a steady
rate to the split test project's echo consumer and checks the echoes: in order, none missing,
how long each took (the longest is the socket's hand-over gap), and whether the socket closed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from channels_fleet.dev.stack import FleetStack, ServiceProcess

#: Every socket opened here, so a test's teardown can close what it left open.
OPEN: list[ClientConnection] = []


@dataclass
class Probe:
    """One echo socket: numbered frames out, echoes checked on the way back."""

    sock: ClientConnection
    sent_at: dict[int, float] = field(default_factory=dict)
    sent: int = 0
    last: int = -1
    out_of_order: int = 0
    max_wait: float = 0.0
    code: int | None = None  # set when the socket closed (1006: no close frame)
    owners: list[int] = field(default_factory=list)
    whoami: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def read(self) -> None:
        try:
            async for msg in self.sock:
                assert isinstance(msg, str)
                if msg.startswith("s"):
                    n = int(msg[1:])
                    if n != self.last + 1:
                        self.out_of_order += 1
                    self.last = max(self.last, n)
                    sent = self.sent_at.pop(n, None)
                    if sent is not None:
                        self.max_wait = max(self.max_wait, time.monotonic() - sent)
                else:
                    info = json.loads(msg)
                    self.owners.append(int(info["worker"]))
                    self.whoami.put_nowait(info)
        except ConnectionClosed:
            pass
        self.code = self.sock.close_code or 1006

    async def send_next(self) -> None:
        if self.code is not None:
            return
        n = self.sent
        self.sent += 1
        self.sent_at[n] = time.monotonic()
        try:
            await self.sock.send(f"s{n}")
        except ConnectionClosed:
            pass

    async def ask_owner(self, timeout: float = 10) -> dict[str, Any]:
        await self.sock.send("whoami")
        return await asyncio.wait_for(self.whoami.get(), timeout)

    def unanswered_for(self) -> float:
        """How long the oldest frame still without an echo has waited."""
        if not self.sent_at:
            return 0.0
        return time.monotonic() - min(self.sent_at.values())

    @property
    def lost(self) -> int:
        return len(self.sent_at)


async def open_probes(iface: ServiceProcess, count: int, path: str = "/ws/echo/rehome/",
                      batch: int = 50, subprotocols: list[str] | None = None,
                      ) -> tuple[list[Probe], list[asyncio.Task[None]]]:
    probes: list[Probe] = []
    readers = []
    for start in range(0, count, batch):
        socks = await asyncio.gather(*(
            connect(iface.url + path, origin=iface.origin, open_timeout=30, ping_interval=None,
                    max_queue=None, subprotocols=subprotocols)
            for _ in range(min(batch, count - start))
        ))
        OPEN.extend(socks)
        for sock in socks:
            probe = Probe(sock)
            probes.append(probe)
            readers.append(asyncio.create_task(probe.read()))
    return probes, readers


async def traffic(probes: list[Probe], rate: float, stop: asyncio.Event) -> None:
    """Every probe sends ``rate`` frames a second, spread evenly, until ``stop``."""
    period = 1.0 / rate
    step = period / max(1, len(probes))
    next_at = time.monotonic()
    while not stop.is_set():
        for probe in probes:
            await probe.send_next()
            next_at += step
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop.is_set():
                return


async def settle(probes: list[Probe], timeout: float) -> None:
    """Wait (on the echoes, not a fixed sleep) until every frame sent has come back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.lost == 0 or p.code is not None for p in probes):
            return
        await asyncio.sleep(0.05)


def exited(proc: ServiceProcess, timeout: float) -> int:
    return proc.popen.wait(timeout=timeout)


@dataclass
class RollResult:
    sockets: int
    disconnects: int
    out_of_order: int
    lost_frames: int
    gaps: list[float]
    frames: int
    seconds: float
    exit_codes: list[int]
    old_pids: set[int]
    owners_after: dict[int, int]

    @property
    def p95_gap_ms(self) -> int:
        gaps = sorted(self.gaps)
        return round(gaps[int(0.95 * (len(gaps) - 1))] * 1000) if gaps else 0

    def line(self) -> str:
        return (f"rehome: disconnects={self.disconnects} sockets={self.sockets} "
                f"p95_gap_ms={self.p95_gap_ms} lost_frames={self.lost_frames}")


async def rolling_restart(fleet: FleetStack, iface: ServiceProcess, workers: list[ServiceProcess],
                          sockets: int, rate: float = 1.0) -> RollResult:
    """Open ``sockets`` echo sockets, keep traffic going, restart every worker in turn (a new
    one ready first, then SIGTERM to the old one, as a Deployment's rolling update), then
    check every socket: still open, answering, nothing lost or reordered."""
    probes, readers = await open_probes(iface, sockets)
    t0 = time.monotonic()
    stop = asyncio.Event()
    sender = asyncio.create_task(traffic(probes, rate, stop))
    old_pids = {w.pid for w in workers}
    codes = []
    try:
        await asyncio.sleep(1)  # steady traffic before the first restart
        for old in list(workers):
            new = await asyncio.to_thread(fleet.worker)  # waits until ready, off the loop
            workers.append(new)
            old.signal(signal.SIGTERM)
            codes.append(await asyncio.to_thread(exited, old, 30))
            workers.remove(old)
        await asyncio.sleep(1)  # traffic on the new workers too
    finally:
        stop.set()
        await sender
    await settle(probes, 15)
    seconds = time.monotonic() - t0
    owners: dict[int, int] = {}
    for probe in probes:
        if probe.code is None:
            pid = int((await probe.ask_owner())["worker"])
            owners[pid] = owners.get(pid, 0) + 1
    result = RollResult(
        sockets=len(probes),
        disconnects=sum(p.code is not None for p in probes),
        out_of_order=sum(p.out_of_order for p in probes),
        lost_frames=sum(p.lost for p in probes),
        gaps=[p.max_wait for p in probes],
        frames=sum(p.sent for p in probes),
        seconds=seconds,
        exit_codes=codes,
        old_pids=old_pids,
        owners_after=owners,
    )
    await asyncio.gather(*(p.sock.close() for p in probes), return_exceptions=True)
    await asyncio.gather(*readers, return_exceptions=True)
    return result
