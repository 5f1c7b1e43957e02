"""An unchanged project's channels_redis / in-memory CHANNEL_LAYERS, adopted by the services.

Without adoption, channels_redis 4.3 under redis-py 8 closes an idle consumer's socket with 1011
after 5 s (its receive times out), and an in-memory layer cannot reach another worker.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from foreignstack import foreign_stack, logs, recv, ws

from channels_fleet.dev.cluster import LocalRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """One redis-server for this module: the project's channels_redis hosts and the relay."""
    local = LocalRedis(tmp_path_factory.mktemp("redis"), masters=1, replicas=0).start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def redis_stack(own_redis: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with foreign_stack(tmp_path_factory.mktemp("adopt"), own_redis.urls[0],
                       own_redis.urls) as stack:
        yield stack


@pytest.fixture(scope="module")
def memory_stack(own_redis: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    # Two workers taking one connection each: two sockets are served by two processes.
    with foreign_stack(tmp_path_factory.mktemp("memory"), own_redis.urls[0], own_redis.urls,
                       settings="mysite.settings_dev", workers=2,
                       worker_args=("--concurrency", "1")) as stack:
        yield stack


def post(port: int, path: str, body: dict) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status


async def test_idle_consumers_stay_connected_and_still_echo(redis_stack: Any) -> None:
    async with (ws(redis_stack, "/ws/achat/idle/") as fast,
                ws(redis_stack, "/ws/chat/idle/") as sync):
        await fast.send(json.dumps({"message": "before"}))
        assert json.loads(await recv(fast)) == {"message": "before"}
        assert json.loads(await recv(sync)) == {"message": "before"}
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # nothing arrives, and nothing closes, for 8 s
            await asyncio.wait_for(asyncio.gather(fast.recv(), sync.recv()), 8)
        assert time.monotonic() - started >= 8
        await sync.send(json.dumps({"message": "after"}))
        assert json.loads(await recv(fast)) == {"message": "after"}
        assert json.loads(await recv(sync)) == {"message": "after"}


async def test_group_send_from_a_web_view_reaches_a_worker_socket(redis_stack: Any) -> None:
    async with ws(redis_stack, "/ws/chat/fromweb/") as sock:
        await sock.send(json.dumps({"message": "joined"}))  # the group membership is in place
        await recv(sock)
        status = await asyncio.to_thread(post, redis_stack.web, "/chat/fromweb/broadcast/",
                                         {"message": "from a view"})
        assert status == 200
        assert json.loads(await recv(sock)) == {"message": "from a view"}


def test_one_log_line_per_adopted_alias_in_every_process(redis_stack: Any) -> None:
    line = re.compile(r"INFO (\d+) channels_fleet.adopt: CHANNEL_LAYERS\['default'\]: "
                      r"channels_redis.core.RedisChannelLayer replaced by "
                      r"channels_fleet.layers.RedisClusterChannelLayer \(hosts redis://")
    assert len(line.findall(logs(redis_stack, "worker"))) == 1
    # Each of the 2 gunicorn workers loads the app, and adopts, in its own process.
    assert len(set(line.findall(logs(redis_stack, "web")))) == 2
    assert "adopt" not in logs(redis_stack, "interface")  # the interface runs no project code


async def test_in_memory_layer__group_send_crosses_workers_and_tiers(memory_stack: Any) -> None:
    async with ws(memory_stack, "/ws/chat/mem/") as one, ws(memory_stack, "/ws/chat/mem/") as two:
        await one.send(json.dumps({"message": "from worker one"}))
        assert json.loads(await recv(one)) == {"message": "from worker one"}
        assert json.loads(await recv(two)) == {"message": "from worker one"}
        await asyncio.to_thread(post, memory_stack.web, "/chat/mem/broadcast/", {"message": "web"})
        assert json.loads(await recv(one)) == {"message": "web"}
        assert json.loads(await recv(two)) == {"message": "web"}
    assert "channels.layers.InMemoryChannelLayer replaced by" in logs(memory_stack, "worker")


async def test_settings_named_only_by_the_asgi_module(own_redis: LocalRedis,
                                                      tmp_path: Path) -> None:
    """No DJANGO_SETTINGS_MODULE in the environment, as ``daphne mysite.asgi:application``
    allows: the worker starts and adopts as the module's ``django.setup()`` begins."""
    with foreign_stack(tmp_path, own_redis.urls[0], own_redis.urls,
                       settings_in_env=False) as stack:
        async with ws(stack, "/ws/echo/") as sock:
            await sock.send("hello")
            assert await recv(sock) == "hello"
        worker = logs(stack, "worker")
    assert "channels_redis.core.RedisChannelLayer replaced by" in worker
    # chat/signals.py takes its layer during django.setup(): adopted before that began.
    assert "a layer was built before adoption" not in worker


def test_project_untouched() -> None:
    """The project is a foreign one: nothing in it knows channels-fleet."""
    project = Path(__file__).resolve().parent / "project"
    for source in project.rglob("*.py"):
        assert "channels_fleet" not in source.read_text(), source
