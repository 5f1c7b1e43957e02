"""Demultiplexer and Binding through the split: a real interface, two workers, the Redis Cluster,
and a separate Django process standing in for the web tier."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.sites import Site
from websockets.asyncio.client import connect

from channels_fleet.dev.cluster import LocalRedis

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(90)]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PYTHONPATH = os.pathsep.join(
    [str(HERE / "featureproject"), str(ROOT / "tests"), str(ROOT / "src")])


SETUP = """
from django.core.management import call_command
from django.contrib.auth.models import User
from django.test import Client
from support.bindingapp.models import Board
call_command("migrate", run_syncdb=True, verbosity=0)
client = Client()
client.force_login(User.objects.create_user("member"))
print(Board.objects.create(name="b").pk, client.cookies["sessionid"].value)
"""


@pytest.fixture(scope="module")
def stack(redis_cluster: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("features")
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "FEATURE_DB": str(tmp / "db.sqlite3"),
           "DJANGO_SETTINGS_MODULE": "featureproject.settings",
           "CHANNELS_FLEET_REDIS_URL": ",".join(redis_cluster.urls[:3])}
    stack = Site(env, tmp)
    board, cookie = stack.django(SETUP).split()
    stack.board, stack.cookie = int(board), cookie
    try:
        stack.port = stack.start("interface")
        stack.start("worker", "featureproject.asgi:application")
        stack.start("worker", "featureproject.asgi:application")
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


def desk(stack: Any, signed_in: bool = True) -> Any:
    headers = {"Cookie": f"sessionid={stack.cookie}"} if signed_in else {}
    return connect(f"ws://127.0.0.1:{stack.port}/ws/desk/", open_timeout=10,
                   origin=f"http://127.0.0.1:{stack.port}", additional_headers=headers)


async def recv(sock: Any) -> dict:
    return json.loads(await asyncio.wait_for(sock.recv(), 10))


async def test_streams_and_bound_model_through_the_split(stack: Any) -> None:
    async with desk(stack) as watcher, desk(stack) as writer:
        await watcher.send(json.dumps({"stream": "echo", "payload": {"n": 1}}))
        echo = await recv(watcher)
        assert echo["stream"] == "echo"
        assert echo["payload"]["echo"] == {"n": 1}
        assert echo["payload"]["user"] == "member"  # the login reached the worker's scope

        await watcher.send(json.dumps({"stream": "cards", "payload": {
            "action": "subscribe", "data": {"board": stack.board}}}))
        assert (await recv(watcher))["payload"]["response"] == "ok"

        # A change made by another Django process (the web tier) reaches the socket.
        pk = stack.django("from support.bindingapp.models import Card\n"
                          f"print(Card.objects.create(board_id={stack.board}, title='web').pk)")
        push = await recv(watcher)
        assert push["stream"] == "cards"
        assert push["payload"]["action"] == "create" and push["payload"]["pk"] == int(pk)

        # A write through another socket (maybe another worker) reaches the watcher.
        await writer.send(json.dumps({"stream": "cards", "payload": {
            "action": "update", "pk": int(pk), "data": {"column": "done"}}}))
        assert (await recv(writer))["payload"]["response"] == "ok"
        push = await recv(watcher)
        assert push["payload"]["action"] == "update"
        assert push["payload"]["data"]["column"] == "done"

        await watcher.send(json.dumps({"stream": "nope", "payload": {}}))
        assert await recv(watcher) == {"error": "unknown stream", "stream": "nope"}
        await watcher.send("{not json")
        assert (await recv(watcher))["error"] == "malformed frame"
        await watcher.send(json.dumps({"stream": "echo", "payload": "alive"}))
        assert (await recv(watcher))["payload"]["echo"] == "alive"


async def test_anonymous_socket__binding_refuses_socket_stays(stack: Any) -> None:
    async with desk(stack, signed_in=False) as sock:
        await sock.send(json.dumps({"stream": "cards", "payload": {
            "action": "create", "data": {"board": stack.board, "title": "x"}}}))
        reply = await recv(sock)
        assert reply["payload"]["error"] == "permission denied"
        await sock.send(json.dumps({"stream": "echo", "payload": 1}))
        assert (await recv(sock))["payload"]["user"] == "anonymous"
