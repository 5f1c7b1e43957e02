"""Liveness: every interface and worker proves it is alive; peers check each other.

:class:`Liveness` is what a process's relay side asks of it; :class:`RedisLiveness` does it on
the relay's Redis with a :class:`~.heartbeat.Heartbeat` (this process's key, beaten from a
thread) and a :class:`~.peer_watch.PeerWatch` (its peers' keys, read from the event loop), and
on an interface a :class:`~.room.WorkerRoom` (whether every worker is full).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..layers.clients import redis_client
from .heartbeat import Heartbeat, Pause, Status
from .peer_watch import PeerWatch
from .room import WorkerRoom
from .wire import INTERFACE_CHANNELS, workers_key

Peers = Callable[[], Iterable[str]]
OnDead = Callable[[set[str]], None]


class Liveness(Protocol):
    """How a process proves it is alive and learns which of its peers died."""

    @property
    def age(self) -> float:
        """Seconds since this process last proved it is alive."""

    @property
    def fresh(self) -> bool:
        """Whether its peers still count it alive."""

    @property
    def workers_full(self) -> bool:
        """Whether every live worker takes no new connection (at its concurrency cap, or
        draining), as their heartbeats said; False when unknown (``room.py``)."""

    async def start(self, channel: str, peers: Peers, on_dead: OnDead,
                    on_lost: Callable[[], None]) -> None:
        """Start beating as ``channel``; call ``on_dead`` with those of ``peers()`` that died
        and ``on_lost`` (on the loop) when this process was declared dead itself."""

    async def stop(self) -> None:
        """Stop beating (the heartbeat key goes) and watching."""


class RedisLiveness:
    """:class:`Liveness` on the relay's Redis: a :class:`Heartbeat` and a :class:`PeerWatch`.

    Peers are checked twice per beat (one MGET), so a dead peer is noticed at most TTL + half
    an interval after its last beat. The heartbeat reports the process's name
    (``settings.process_name()``), kind and pid, plus what ``status()`` adds; a worker's is
    also listed in ``wire.workers_key``, which an interface reads for ``workers_full``.
    """

    def __init__(self, settings: Any, status: Status | None = None,
                 pause: Pause | None = None) -> None:
        self.settings = settings
        self.status = status
        self.pause = pause
        self.heartbeat: Heartbeat | None = None
        self.watch: PeerWatch | None = None
        self.room: WorkerRoom | None = None  # interfaces only
        self._reading: asyncio.Task[None] | None = None
        self._redis: Any = None

    @property
    def age(self) -> float:
        return self.heartbeat.age if self.heartbeat is not None else float("inf")

    @property
    def fresh(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.fresh

    @property
    def workers_full(self) -> bool:
        return self.room is not None and self.room.full

    async def start(self, channel: str, peers: Peers, on_dead: OnDead,
                    on_lost: Callable[[], None]) -> None:
        s = self.settings
        self._redis = await redis_client(s.redis_url)
        worker = not channel.startswith(INTERFACE_CHANNELS)
        self.heartbeat = Heartbeat(s.redis_url, channel, interval=s.heartbeat_interval,
                                   ttl=s.heartbeat_ttl, on_lost=on_lost, prefix=s.key_prefix,
                                   status=self._report(channel),
                                   registry=workers_key(s.key_prefix) if worker else None,
                                   pause=self.pause)
        await self.heartbeat.start()
        heartbeat = self.heartbeat
        self.watch = PeerWatch(self._redis, peers, on_dead, interval=s.heartbeat_interval / 2,
                               cut_off=lambda: heartbeat.overdue, prefix=s.key_prefix,
                               url=s.redis_url[0])
        self.watch.start()
        if not worker:
            self.room = WorkerRoom(self._redis, prefix=s.key_prefix,
                                   interval=s.heartbeat_interval / 2,
                                   full_after=s.heartbeat_interval, url=s.redis_url[0])
            self._reading = asyncio.create_task(self.room.keep_reading(), name="worker-room")

    def _report(self, channel: str) -> Status:
        kind = "interface" if channel.startswith(INTERFACE_CHANNELS) else "worker"
        base = {"name": self.settings.process_name(), "kind": kind, "pid": os.getpid()}
        extra = self.status
        return (lambda: base) if extra is None else (lambda: {**base, **extra()})

    async def stop(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)
        if self.watch is not None:
            await self.watch.stop()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self._redis is not None:
            await self._redis.aclose()
