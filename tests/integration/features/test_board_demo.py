"""The demo's live board (examples/chat/board) through the split: interface, worker, web tier
(gunicorn) and the Redis Cluster, driven by real WebSocket and HTTP clients."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.sites import Site
from websockets.asyncio.client import connect

from channels_fleet.dev.cluster import LocalRedis

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(120)]

PROJECT = Path(__file__).resolve().parents[3] / "examples" / "chat"

LOGIN = """
from django.contrib.auth.models import User
from django.test import Client
client = Client()
client.force_login(User.objects.create_user("alice"))
print(client.cookies["sessionid"].value)
"""


@pytest.fixture(scope="module")
def demo(redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("board-demo")
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "CHAT_RUN_DIR": str(tmp),
           "DJANGO_SETTINGS_MODULE": "chat_project.settings",
           "CHANNELS_FLEET_REDIS_URL": ",".join(redis_cluster.urls[:3])}
    subprocess.run([sys.executable, str(PROJECT / "manage.py"), "migrate", "-v", "0"],
                   env=env, cwd=tmp, check=True, timeout=60)
    stack = Site(env, tmp)
    stack.cookie = stack.django(LOGIN)
    try:
        stack.port = stack.start("interface")
        stack.web = stack.start("web", "chat_project.wsgi:application")
        stack.start("worker", "chat_project.asgi:application")
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


def board(demo: Any, signed_in: bool) -> Any:
    headers = {"Cookie": f"sessionid={demo.cookie}"} if signed_in else {}
    return connect(f"ws://127.0.0.1:{demo.port}/ws/board/", open_timeout=10,
                   origin=f"http://127.0.0.1:{demo.port}", additional_headers=headers)


async def recv(sock: Any) -> dict:
    return json.loads(await asyncio.wait_for(sock.recv(), 10))


async def send(sock: Any, stream: str, payload: dict) -> None:
    await sock.send(json.dumps({"stream": stream, "payload": payload}))


def test_board_page_served_by_the_web_tier(demo: Any) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{demo.web}/board/", timeout=10) as resp:
        page = resp.read().decode()
    assert resp.status == 200
    assert 'data-socket-path="/ws/board/"' in page
    assert "sign in" in page  # anonymous: watching only


async def test_board_live_for_everyone_writable_when_signed_in(demo: Any) -> None:
    async with board(demo, True) as alice, board(demo, False) as anon:
        for sock in (alice, anon):
            await send(sock, "board", {"action": "subscribe"})
            assert (await recv(sock))["payload"]["response"] == "ok"
            await send(sock, "board", {"action": "list"})
            assert (await recv(sock))["payload"]["action"] == "list"

        await send(alice, "board", {"action": "create", "data": {"title": "Ship the demo"}})
        ack = await recv(alice)
        assert ack["payload"]["response"] == "ok"
        for sock in (alice, anon):
            push = await recv(sock)
            assert push["stream"] == "board"
            assert push["payload"]["action"] == "create"
            assert push["payload"]["data"]["title"] == "Ship the demo"
            assert push["payload"]["data"]["author"] == "alice"  # set by the server

        await send(anon, "board", {"action": "update", "pk": ack["payload"]["pk"],
                                   "data": {"column": "done"}})
        assert (await recv(anon))["payload"]["error"] == "permission denied"

        # A change made in another Django process (the admin on the web tier, a script).
        demo.django("from board.models import Card\n"
                    f"Card.objects.filter(pk={ack['payload']['pk']}).first().save()")
        for sock in (alice, anon):
            assert (await recv(sock))["payload"]["action"] == "update"


async def test_board_chat_stream_shares_the_board_room(demo: Any) -> None:
    room = connect(f"ws://127.0.0.1:{demo.port}/ws/chat/board/", open_timeout=10,
                   origin=f"http://127.0.0.1:{demo.port}")
    async with board(demo, True) as alice, room as plain:
        await send(alice, "chat", {"message": "hello from the board"})
        assert await recv(plain) == {"message": "hello from the board", "user": "alice"}
        echo = await recv(alice)
        assert echo == {"stream": "chat",
                        "payload": {"message": "hello from the board", "user": "alice"}}
