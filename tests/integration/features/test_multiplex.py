"""Demultiplexer: several streams over one socket, each a full consumer, on a real Redis layer."""

from __future__ import annotations

import asyncio

import pytest
from support.bindingapp.djangosetup import setup

setup()

from channels.generic.websocket import (  # noqa: E402
    AsyncJsonWebsocketConsumer,
    JsonWebsocketConsumer,
)
from channels.testing import WebsocketCommunicator  # noqa: E402
from support.bindingapp.fixtures import layer_fixture  # noqa: E402, F401  (the "layer" fixture)

from channels_fleet.multiplex import Demultiplexer  # noqa: E402

pytestmark = pytest.mark.timeout(30)

# Child disconnect handlers record (stream, code) here, to prove they ran.
DISCONNECTS: list[tuple[str, int]] = []


class Echo(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json({"echo": content, "stream": self.scope["stream"]})


class SyncEcho(JsonWebsocketConsumer):
    def receive_json(self, content, **kwargs):
        self.send_json({"sync": content})


class Room(AsyncJsonWebsocketConsumer):
    """Joins groups on request; relays group messages; closes on request."""

    async def receive_json(self, content, **kwargs):
        if "join" in content:
            await self.channel_layer.group_add(content["join"], self.channel_name)
            self.groups.append(content["join"])
            await self.send_json({"joined": content["join"], "channel": self.channel_name})
        elif "say" in content:
            await self.channel_layer.group_send(
                content["say"], {"type": "room.message", "text": content["text"]})
        elif "close" in content:
            await self.close(content["close"])

    async def room_message(self, event):
        await self.send_json({"heard": event["text"], "stream": self.scope["stream"]})

    async def disconnect(self, code):
        DISCONNECTS.append((self.scope["stream"], code))


class Refuse(AsyncJsonWebsocketConsumer):
    async def connect(self):
        await self.close(4003)


class Crash(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        raise RuntimeError("bug in a stream consumer")


class Lobby(Demultiplexer):
    consumers = {"echo": Echo, "sync": SyncEcho, "red": Room, "blue": Room,
                 "refuse": Refuse, "crash": Crash}


class Guarded(Demultiplexer):
    consumers = {"echo": Echo}

    async def connect(self):
        if self.scope.get("user") is None:
            await self.close(4001)
        else:
            await self.accept()


async def connected(app=None, **scope):
    comm = WebsocketCommunicator((app or Lobby).as_asgi(), "/ws/lobby/")
    comm.scope.update(scope)
    ok, _ = await comm.connect()
    assert ok
    # The refusing stream closes itself during connect: the socket stays up.
    if app is None:
        assert await comm.receive_json_from() == {"stream": "refuse", "event": "closed",
                                                  "code": 4003}
    return comm


async def test_streams_share_one_socket__each_reply_tagged(layer):
    comm = await connected()
    await comm.send_json_to({"stream": "echo", "payload": {"n": 1}})
    await comm.send_json_to({"stream": "sync", "payload": [1, 2]})
    replies = [await comm.receive_json_from(), await comm.receive_json_from()]
    assert {"stream": "echo", "payload": {"echo": {"n": 1}, "stream": "echo"}} in replies
    assert {"stream": "sync", "payload": {"sync": [1, 2]}} in replies
    await comm.disconnect()


async def test_each_stream_has_own_channel_and_groups(layer):
    comm = await connected()
    await comm.send_json_to({"stream": "red", "payload": {"join": "g-red"}})
    red = (await comm.receive_json_from())["payload"]["channel"]
    await comm.send_json_to({"stream": "blue", "payload": {"join": "g-blue"}})
    blue = (await comm.receive_json_from())["payload"]["channel"]
    assert red != blue

    await layer.group_send("g-blue", {"type": "room.message", "text": "to blue"})
    assert await comm.receive_json_from() == {
        "stream": "blue", "payload": {"heard": "to blue", "stream": "blue"}}
    await layer.group_send("g-red", {"type": "room.message", "text": "to red"})
    assert await comm.receive_json_from() == {
        "stream": "red", "payload": {"heard": "to red", "stream": "red"}}
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_group_message_from_one_socket_reaches_stream_of_another(layer):
    alice, bob = await connected(), await connected()
    await bob.send_json_to({"stream": "red", "payload": {"join": "room-1"}})
    await bob.receive_json_from()
    await alice.send_json_to({"stream": "blue", "payload": {"say": "room-1", "text": "hi"}})
    assert await bob.receive_json_from() == {
        "stream": "red", "payload": {"heard": "hi", "stream": "red"}}
    assert await alice.receive_nothing(0.3)
    await alice.disconnect()
    await bob.disconnect()


@pytest.mark.parametrize("frame, error", [
    ('{"stream": "nope", "payload": {}}', {"error": "unknown stream", "stream": "nope"}),
    ("not json", {"error": "malformed frame", "detail": "not JSON"}),
    ("[1, 2]", {"error": "malformed frame", "detail": "expected a JSON object"}),
    ('{"stream": "echo"}', {"error": "malformed frame",
                            "detail": "expected stream and payload keys"}),
    ('{"payload": 1}', {"error": "malformed frame", "detail": "expected stream and payload keys"}),
    ('{"stream": 5, "payload": 1}', {"error": "malformed frame",
                                     "detail": "expected stream and payload keys"}),
])
async def test_bad_frame__error_frame_and_socket_stays_usable(layer, frame, error):
    comm = await connected()
    await comm.send_to(text_data=frame)
    assert await comm.receive_json_from() == error
    await comm.send_json_to({"stream": "echo", "payload": "still here"})
    assert (await comm.receive_json_from())["payload"]["echo"] == "still here"
    await comm.disconnect()


async def test_binary_frame__error_frame(layer):
    comm = await connected()
    await comm.send_to(bytes_data=b"\x00\x01")
    assert await comm.receive_json_from() == {"error": "binary frames are not supported"}
    await comm.disconnect()


async def test_stream_close__closes_only_that_stream(layer):
    DISCONNECTS.clear()
    comm = await connected()
    await comm.send_json_to({"stream": "red", "payload": {"join": "g-close"}})
    await comm.receive_json_from()
    await comm.send_json_to({"stream": "red", "payload": {"close": 4000}})
    assert await comm.receive_json_from() == {"stream": "red", "event": "closed", "code": 4000}

    # Its disconnect handler ran and it left its group; the socket and other streams live on.
    for _ in range(50):
        if ("red", 4000) in DISCONNECTS:
            break
        await asyncio.sleep(0.02)
    assert ("red", 4000) in DISCONNECTS
    await layer.group_send("g-close", {"type": "room.message", "text": "anyone?"})
    await comm.send_json_to({"stream": "red", "payload": {"join": "x"}})
    assert await comm.receive_json_from() == {"error": "stream closed", "stream": "red"}
    await comm.send_json_to({"stream": "echo", "payload": 2})
    assert await comm.receive_json_from() == {"stream": "echo",
                                              "payload": {"echo": 2, "stream": "echo"}}
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_stream_consumer_raising__stream_closed_1011_socket_survives(layer):
    comm = await connected()
    await comm.send_json_to({"stream": "crash", "payload": {}})
    assert await comm.receive_json_from() == {"stream": "crash", "event": "closed", "code": 1011}
    await comm.send_json_to({"stream": "echo", "payload": 3})
    assert (await comm.receive_json_from())["payload"]["echo"] == 3
    await comm.disconnect()


async def test_socket_disconnect__every_stream_runs_its_disconnect(layer):
    DISCONNECTS.clear()
    comm = await connected()
    await comm.disconnect(code=1001)
    assert sorted(DISCONNECTS) == [("blue", 1001), ("red", 1001)]


async def test_demultiplexer_connect_can_refuse_the_socket(layer):
    comm = WebsocketCommunicator(Guarded.as_asgi(), "/ws/")
    ok, code = await comm.connect()
    assert (ok, code) == (False, 4001)
    comm = await connected(Guarded, user="someone")
    await comm.send_json_to({"stream": "echo", "payload": {"user": "ok"}})
    assert (await comm.receive_json_from())["payload"]["echo"] == {"user": "ok"}
    await comm.disconnect()


async def test_stream_busy__error_frame_not_unbounded_queue(layer):
    class Slow(AsyncJsonWebsocketConsumer):
        async def receive_json(self, content, **kwargs):
            await asyncio.sleep(0.5)

    class Tiny(Demultiplexer):
        consumers = {"slow": Slow}
        max_pending = 2
        application_close_timeout = 0.3

    comm = await connected(Tiny)
    for i in range(6):
        await comm.send_json_to({"stream": "slow", "payload": i})
    # The child holds one frame and the queue two, give or take the one in flight.
    errors = []
    while not await comm.receive_nothing(0.3):
        errors.append(await comm.receive_json_from())
    assert 2 <= len(errors) <= 4
    assert all(e == {"error": "stream busy", "stream": "slow"} for e in errors)
    await comm.disconnect(timeout=3)


def test_bad_stream_entry__fails_at_class_definition():
    with pytest.raises(TypeError, match="needs a consumer class or ASGI app"):
        class Broken(Demultiplexer):
            consumers = {"x": "not a consumer"}


async def test_child_output_not_json__carried_as_string_binary_refused(layer):
    class Raw(AsyncJsonWebsocketConsumer):
        async def receive_json(self, content, **kwargs):
            if content == "text":
                await self.send(text_data="plain words")
            else:
                await self.send(bytes_data=b"\x00")

    class Mux(Demultiplexer):
        consumers = {"raw": Raw}

    comm = await connected(Mux)
    await comm.send_json_to({"stream": "raw", "payload": "text"})
    assert await comm.receive_json_from() == {"stream": "raw", "payload": "plain words"}
    await comm.send_json_to({"stream": "raw", "payload": "bytes"})
    assert await comm.receive_json_from() == {"error": "binary frame from stream", "stream": "raw"}
    await comm.disconnect()


async def test_child_returning_without_close__stream_reported_closed(layer):
    async def one_shot(scope, receive, send):
        await receive()  # websocket.connect
        await send({"type": "websocket.send", "text": '{"hello": 1}'})

    class Mux(Demultiplexer):
        consumers = {"once": one_shot, "echo": Echo}

    comm = await connected(Mux)
    frames = [await comm.receive_json_from(), await comm.receive_json_from()]
    assert frames == [{"stream": "once", "payload": {"hello": 1}},
                      {"stream": "once", "event": "closed", "code": 1000}]
    await comm.send_json_to({"stream": "echo", "payload": 1})
    assert (await comm.receive_json_from())["payload"]["echo"] == 1
    await comm.disconnect()


async def test_stream_scope__override_feeds_a_stream_its_url_kwargs(layer):
    class Named(AsyncJsonWebsocketConsumer):
        async def connect(self):
            self.room = self.scope["url_route"]["kwargs"]["room"]
            await self.accept()

        async def receive_json(self, content, **kwargs):
            await self.send_json({"room": self.room})

    class Mux(Demultiplexer):
        consumers = {"a": Named, "b": Named}

        def stream_scope(self, name):
            return {**super().stream_scope(name), "url_route": {"kwargs": {"room": f"r-{name}"}}}

    comm = await connected(Mux)
    await comm.send_json_to({"stream": "b", "payload": {}})
    assert await comm.receive_json_from() == {"stream": "b", "payload": {"room": "r-b"}}
    await comm.disconnect()


async def test_absurdly_nested_json__error_frame(layer):
    comm = await connected()
    await comm.send_to(text_data="[" * 100_000 + "]" * 100_000)
    assert await comm.receive_json_from() == {"error": "malformed frame", "detail": "not JSON"}
    await comm.disconnect()
