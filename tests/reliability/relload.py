"""Load helpers of the reliability scenarios: many WebSockets, paced traffic, process figures."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from channels_fleet.dev.stack import ServiceProcess


def ws(proc: ServiceProcess, path: str, **kwargs: Any) -> Any:
    kwargs.setdefault("origin", proc.origin)
    kwargs.setdefault("open_timeout", 20)
    return connect(proc.url + path, **kwargs)


async def whoami(sock: Any, timeout: float = 10) -> int:
    await sock.send("whoami")
    return int(json.loads(await asyncio.wait_for(sock.recv(), timeout))["worker"])


@dataclass
class Echo:
    """One echo socket sending numbered messages; counts what came back."""

    sock: Any
    owner: int = 0
    sent: int = 0
    got: list[int] = field(default_factory=list)
    code: int | None = None
    closed_at: float | None = None
    out_of_order: int = 0
    times: list[float] = field(default_factory=list)

    async def reader(self) -> None:
        try:
            async for msg in self.sock:
                if isinstance(msg, str) and msg.isdigit():
                    n = int(msg)
                    if self.got and n != self.got[-1] + 1:
                        self.out_of_order += 1
                    self.got.append(n)
                    self.times.append(time.monotonic())
        except ConnectionClosed:
            pass
        self.closed_at = time.monotonic()
        rcvd = self.sock.protocol.close_rcvd
        self.code = rcvd.code if rcvd is not None else 1006

    async def pace(self, rate: float, stop: asyncio.Event) -> None:
        """Send ``rate`` numbered messages a second until ``stop`` or the socket closes."""
        period = 1.0 / rate
        next_at = time.monotonic()
        while not stop.is_set() and self.closed_at is None:
            try:
                await self.sock.send(str(self.sent))
            except ConnectionClosed:
                return
            self.sent += 1
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass

    def max_gap(self, since: float) -> float:
        """Longest time without an echo after ``since`` (the window of an outage)."""
        times = [since] + [t for t in self.times if t > since]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

    @property
    def lost(self) -> int:
        return self.sent - len(set(self.got))


async def open_echoes(proc: ServiceProcess, count: int, path: str = "/ws/echo/load/",
                      batch: int = 50) -> list[Echo]:
    """Open ``count`` echo sockets (in batches) and learn each one's owner pid."""
    echoes: list[Echo] = []
    for start in range(0, count, batch):
        socks = await asyncio.gather(*(ws(proc, path).__aenter__()
                                       for _ in range(min(batch, count - start))))
        owners = await asyncio.gather(*(whoami(s) for s in socks))
        echoes += [Echo(s, o) for s, o in zip(socks, owners, strict=True)]
    return echoes


async def settle(echoes: list[Echo], timeout: float) -> None:
    """Wait until every open socket got back all it sent (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(e.closed_at is not None or len(set(e.got)) >= e.sent for e in echoes):
            return
        await asyncio.sleep(0.05)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def log_count(proc: ServiceProcess, needle: str) -> int:
    return proc.log.read_text(errors="replace").count(needle)
