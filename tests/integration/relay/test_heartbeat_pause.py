"""A pause that holds the process for longer than the heartbeat's TTL (a full garbage
collection over millions of objects) is announced first: peers never see the key lapse."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.relay import wire
from channels_fleet.relay.heartbeat import Heartbeat


class Hold:
    """Holds the heartbeat thread ``seconds`` once, when due: no beat can happen meanwhile."""

    budget = 3.0

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: float | None = None
        self.ended: float | None = None

    def due(self) -> bool:
        return self.started is None

    def run(self) -> None:
        self.started = time.monotonic()
        time.sleep(self.seconds)
        self.ended = time.monotonic()


async def test_a_pause_longer_than_the_ttl__the_key_never_lapses(
        redis_single: LocalRedis) -> None:
    client = aioredis.Redis.from_url(redis_single.urls[0])
    prefix = f"pause{time.time_ns()}"
    registry = wire.workers_key(prefix)
    hold = Hold(seconds=1.5)  # 2.5 TTLs
    beat = Heartbeat(redis_single.urls, "fleet.worker.t!p", interval=0.2, ttl=0.6,
                     prefix=prefix, registry=registry, pause=hold)
    await beat.start()
    try:
        seen: list[tuple[float, int, float | None]] = []  # (time, key exists, registry expiry)
        deadline = time.monotonic() + 4
        while (hold.ended is None or time.monotonic() < hold.ended + 0.5) \
                and time.monotonic() < deadline:
            seen.append((time.monotonic(), await client.exists(beat.key),
                         await client.zscore(registry, "fleet.worker.t!p")))
            await asyncio.sleep(0.05)
        assert hold.started is not None and hold.ended is not None, "the pause never ran"
        during = [(exists, expiry) for at, exists, expiry in seen
                  if hold.started <= at <= hold.ended]
        assert len(during) > 20
        assert all(exists == 1 for exists, _ in during), "the key lapsed during the pause"
        assert all(expiry is not None and expiry > time.time() * 1000 - 2000
                   for _, expiry in during)
        # Right after, beats as before: the key's TTL is the usual one again.
        await asyncio.sleep(0.3)
        assert 0 < await client.pttl(beat.key) <= 600
    finally:
        await beat.stop()
        await client.aclose()
