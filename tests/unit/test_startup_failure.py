"""A service that cannot start says why in one line: the Redis it could not use, password hidden."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from channels_fleet.services._common import startup_failure
from channels_fleet.worker.settings import WorkerSettings


async def test_unreachable_redis__named_without_its_password() -> None:
    url = "redis://:s3cret@127.0.0.1:1"  # nothing listens on port 1
    settings = WorkerSettings.from_env({"CHANNELS_FLEET_REDIS_URL": url}, app="m:app")
    client = aioredis.Redis.from_url(url)
    try:
        await asyncio.wait_for(client.ping(), 5)
    except RedisError as exc:
        line = startup_failure(exc, settings)
    finally:
        await client.aclose()
    assert line.startswith("Redis at redis://:***@127.0.0.1:1: ConnectionError: ")
    assert "s3cret" not in line


def test_other_failures__their_repr() -> None:
    settings = WorkerSettings.from_env({"CHANNELS_FLEET_REDIS_URL": "redis://r:6379"},
                                       app="m:app")
    assert startup_failure(ValueError("bad"), settings) == "ValueError('bad')"
