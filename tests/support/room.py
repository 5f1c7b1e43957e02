"""A room of group members and a steady sender to its group: server-to-client loss, counted.

Shared by ``bench/rehome.py`` and the reliability scenarios. The members are WebSockets on the
split test project's ``RoomConsumer`` (``/ws/room/<room>/``: its connect joins the room's group
before it accepts, so an open socket is a member); the sender is this process, calling
``group_send`` on the project's layer with numbered messages (``g<n>``), as any process posting
to a group does. A message counts as sent once ``group_send`` returned. ``missing()`` lists,
per member whose socket is still open, the messages sent that never reached it: what a move of
its socket (re-homing) cost it. A closed socket is not counted (its close code tells its client
to reconnect; the scenarios count those closes).

    room = Room.of(fleet)
    await room.open(iface, 30)
    room.start(rate=50)
    ...                                  # move the members' sockets
    await room.stop()
    await room.settle(10)                # late is not lost
    missed = room.missed()
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from channels_fleet.dev.stack import FleetStack, ServiceProcess
from channels_fleet.layers import RedisClusterChannelLayer

from .rolling import OPEN

#: The split project's layer prefix (its settings.py): the group_send reaches its groups.
PROJECT_LAYER_PREFIX = "splitproj"


@dataclass
class Member:
    """One socket in the room: which numbered group messages reached it."""

    sock: ClientConnection
    got: set[int] = field(default_factory=set)
    code: int | None = None  # set when the socket closed (1006: no close frame)
    whoami: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def read(self) -> None:
        try:
            async for msg in self.sock:
                if not isinstance(msg, str):
                    continue
                if msg.startswith("g"):
                    self.got.add(int(msg[1:]))
                elif msg.startswith("{"):
                    self.whoami.put_nowait(json.loads(msg))
        except ConnectionClosed:
            pass
        self.code = self.sock.close_code or 1006

    async def ask_owner(self, timeout: float = 10) -> int:
        """The pid of the worker whose consumer serves this socket."""
        await self.sock.send("whoami")
        return int((await asyncio.wait_for(self.whoami.get(), timeout))["worker"])


class Room:
    """Members on the split project's RoomConsumer and a steady sender to the room's group."""

    def __init__(self, hosts: list[str], name: str | None = None) -> None:
        self.name = name or f"room{time.monotonic_ns()}"
        self.layer = RedisClusterChannelLayer(hosts=hosts, prefix=PROJECT_LAYER_PREFIX)
        self.members: list[Member] = []
        self.readers: list[asyncio.Task[None]] = []
        #: numbers of the group messages whose group_send returned
        self.sent: list[int] = []
        self.rate = 0.0
        self._stop = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, fleet: FleetStack, name: str | None = None) -> Room:
        """A room on the Redis of ``fleet`` (a stack of the split test project)."""
        return cls(fleet.env["CHANNELS_FLEET_REDIS_URL"].split(","), name)

    async def open(self, iface: ServiceProcess, count: int, batch: int = 50) -> list[Member]:
        opened: list[Member] = []
        for start in range(0, count, batch):
            socks = await asyncio.gather(*(
                connect(f"{iface.url}/ws/room/{self.name}/?m{len(self.members) + i}",
                        origin=iface.origin, open_timeout=30, ping_interval=None,
                        max_queue=None)
                for i in range(min(batch, count - start))))
            OPEN.extend(socks)
            for sock in socks:
                member = Member(sock)
                opened.append(member)
                self.members.append(member)
                self.readers.append(asyncio.create_task(member.read()))
        return opened

    def start(self, rate: float) -> Room:
        """Send ``rate`` numbered group messages a second until ``stop()``."""
        self.rate = rate
        self._stop.clear()
        self._sender = asyncio.create_task(self._send(rate))
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._sender is not None:
            await self._sender

    async def _send(self, rate: float) -> None:
        n = len(self.sent)
        next_at = time.monotonic()
        while not self._stop.is_set():
            await self.layer.group_send(self.name, {"type": "room.message", "text": f"g{n}"})
            self.sent.append(n)
            n += 1
            next_at += 1 / rate
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass

    def open_members(self, among: list[Member] | None = None) -> list[Member]:
        return [m for m in (self.members if among is None else among) if m.code is None]

    def missing(self, among: list[Member] | None = None) -> dict[int, list[int]]:
        """Per open member (by its index in ``members``), the messages sent that it has not
        received; ``among``: only those members."""
        sent = set(self.sent)
        chosen = {id(m) for m in (self.members if among is None else among)}
        return {i: sorted(sent - m.got) for i, m in enumerate(self.members)
                if id(m) in chosen and m.code is None and not sent <= m.got}

    def missed(self, among: list[Member] | None = None) -> int:
        """(message, member) pairs sent and never received, over the open members."""
        return sum(len(numbers) for numbers in self.missing(among).values())

    def examples(self, among: list[Member] | None = None, count: int = 3) -> str:
        """A few members' missing messages, for a failure's message."""
        return "; ".join(f"member {i}: {numbers[:8]}{' ...' if len(numbers) > 8 else ''}"
                         for i, numbers in list(self.missing(among).items())[:count])

    async def settle(self, timeout: float) -> None:
        """Wait (on the members, not a fixed sleep) until every message reached every open
        member, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.missing() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.stop()
        await asyncio.gather(*(m.sock.close() for m in self.members), return_exceptions=True)
        await asyncio.gather(*self.readers, return_exceptions=True)
        await self.layer.close_pools()
