"""One consumer per kind the split must run unchanged."""

import asyncio
import json
import os
import time

import redis
from channels.consumer import AsyncConsumer, SyncConsumer
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import (
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from redis.cluster import RedisCluster


def record(key, value):
    """Write to the test Redis so the test process can see what a consumer did."""
    url = os.environ["CHANNELS_FLEET_REDIS_URL"].split(",")[0]
    cls = RedisCluster if os.environ.get("SPLIT_CLUSTER") else redis.Redis
    client = cls.from_url(url)
    try:
        client.rpush(key, value)
        client.expire(key, 300)
    finally:
        client.close()


class EchoConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        offered = self.scope.get("subprotocols") or []
        await self.accept(subprotocol=offered[0] if offered else None,
                          headers=[(b"x-fleet-test", b"yes")])

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "whoami":
            await self.send(json.dumps({
                "worker": os.getpid(),
                "fleet": self.scope.get("fleet"),
                "user": str(self.scope["user"]) if "user" in self.scope else None,
                "kwargs": self.scope["url_route"]["kwargs"],
                "client": self.scope.get("client"),
                "scheme": self.scope.get("scheme"),
                "types": [type(self.scope.get(k)).__name__ for k in ("client", "server")],
            }))
        elif text_data and text_data.startswith("burst:"):
            # burst:N:SIZE -> N binary frames of SIZE bytes, each led by its index.
            count, size = map(int, text_data.split(":")[1:])
            for i in range(count):
                await self.send(bytes_data=b"%04d" % i + bytes(size - 4))
        elif text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)


class SyncEchoConsumer(WebsocketConsumer):
    def connect(self):
        self.accept()

    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=f"sync:{text_data}")


class JsonEchoConsumer(JsonWebsocketConsumer):
    def connect(self):
        self.accept()

    def receive_json(self, content, **kwargs):
        self.send_json({"echo": content, "kind": "json"})


class CloseConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await self.close(code=int(self.scope["url_route"]["kwargs"]["code"]), reason="bye now")


class RefuseConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.close()


class CrashOnConnectConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        raise RuntimeError("a bug before accept")


class NoRehomeConsumer(EchoConsumer):
    """Echoes, but refuses a re-homed connection (``?code`` or a plain close)."""

    async def connect(self):
        if self.scope["fleet"]["rehomed"] > 0:
            code = self.scope["query_string"].decode()
            await self.close(code=int(code) if code else None)
            return
        await self.accept()


class RoomConsumer(AsyncWebsocketConsumer):
    """Chat room: group broadcast; records its disconnect in Redis."""

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.tag = self.scope["query_string"].decode() or "anon"
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "whoami":
            await self.send(json.dumps({"worker": os.getpid()}))
            return
        await self.channel_layer.group_send(self.room, {"type": "room.message", "text": text_data})

    async def room_message(self, event):
        await self.send(text_data=event["text"])

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room, self.channel_name)
        await asyncio.to_thread(record, f"split:disconnects:{self.room}", f"{self.tag}:{code}")


class SessionConsumer(AsyncWebsocketConsumer):
    """The resumable-session tests' echo (tests/integration/resume). Records each connect and
    disconnect (``split:session:<name>``), joins the group ``session-<name>`` (its
    ``session.message`` events are sent on), and answers ``stats`` with what it was given.

    ``quiet:...`` is only recorded; ``later:DELAY:N:PREFIX`` sends ``PREFIX-0`` ..
    ``PREFIX-<N-1>`` DELAY seconds later (while its client may be away); anything else is echoed.
    It selects ``chat.v1`` when offered, as an app picks the protocol it speaks."""

    async def connect(self):
        self.name = self.scope["url_route"]["kwargs"]["name"]
        self.received = []
        self.timers = set()
        await self.channel_layer.group_add(f"session-{self.name}", self.channel_name)
        await asyncio.to_thread(record, f"split:session:{self.name}", "connect")
        offered = self.scope.get("subprotocols") or []
        await self.accept(subprotocol="chat.v1" if "chat.v1" in offered else None)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "stats":
            headers = dict(self.scope["headers"])
            await self.send(json.dumps({
                "received": self.received,
                "subprotocols": self.scope.get("subprotocols"),
                "protocol_header": headers.get(b"sec-websocket-protocol", b"").decode(),
                "worker": os.getpid(),
            }))
            return
        self.received.append(text_data if text_data is not None else bytes_data.hex())
        if text_data is None:
            await self.send(bytes_data=bytes_data)
        elif text_data.startswith("later:"):
            _, delay, count, prefix = text_data.split(":", 3)
            timer = asyncio.create_task(self.send_later(float(delay), int(count), prefix))
            self.timers.add(timer)
            timer.add_done_callback(self.timers.discard)
        elif not text_data.startswith("quiet:"):
            await self.send(text_data=text_data)

    async def send_later(self, delay, count, prefix):
        await asyncio.sleep(delay)
        for i in range(count):
            await self.send(text_data=f"{prefix}-{i}")

    async def session_message(self, event):
        await self.send(text_data=event["text"])

    async def disconnect(self, code):
        for timer in list(self.timers):
            timer.cancel()
        await self.channel_layer.group_discard(f"session-{self.name}", self.channel_name)
        await asyncio.to_thread(record, f"split:session:{self.name}", f"disconnect:{code}")


class FloodConsumer(AsyncWebsocketConsumer):
    """On any message, sends 32 MB in 64 KB frames as fast as it can."""

    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        chunk = b"x" * 65536
        for _ in range(512):
            await self.send(bytes_data=chunk)
            await asyncio.sleep(0)

    async def disconnect(self, code):
        await asyncio.to_thread(record, f"split:disconnects:{self.scope['query_string'].decode()}",
                                str(code))


class StreamConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        await self.send_headers(headers=[(b"content-type", b"text/plain")])
        for i in range(5):
            await self.send_body(f"chunk {i}\n".encode(), more_body=True)
            await asyncio.sleep(0.05)
        await self.send_body(b"done\n")


class SlowConsumer(AsyncHttpConsumer):
    """Answers after 30 s: an HTTP request in flight when its worker dies."""

    async def handle(self, body):
        await asyncio.sleep(float(self.scope["query_string"].decode() or 30))
        await self.send_response(200, b"late")


class TaskConsumer(SyncConsumer):
    """A background channel consumer (ChannelNameRouter), as runworker ran."""

    def task_record(self, message):
        record("split:tasks", message["value"])


# Messages Daphne refuses (tests/integration/split/test_conformance.py): each case is what the
# app sends, in order; the first refused send's exception type is recorded under the query
# string, then re-raised.
BAD_HTTP = {
    "nostatus": [{"type": "http.response.start"}],
    "strstatus": [{"type": "http.response.start", "status": "200"}],
    "strheader": [{"type": "http.response.start", "status": 200, "headers": [("foo", b"x")]}],
    "boolheader": [{"type": "http.response.start", "status": 200, "headers": [(b"foo", True)]}],
    "headerpair": [{"type": "http.response.start", "status": 200, "headers": [(b"a", b"b", b"c")]}],
    "bodyfirst": [],
    "twostart": [{"type": "http.response.start", "status": 200}] * 2,
    "strbody": [{"type": "http.response.start", "status": 200},
                {"type": "http.response.body", "body": "hello world"}],
    "trailers": [{"type": "http.response.trailers"}],
    "notype": [{"status": 200}],
    # valid: what follows the end is dropped, as Daphne drops it
    "afterend": [{"type": "http.response.start", "status": 200},
                 {"type": "http.response.body", "body": b"the end"}],
}
BAD_WS = {
    "send-before": [{"type": "websocket.send", "text": "hello world"}],
    "http-start": [{"type": "http.response.start", "status": 200}],
    "accept-twice": [{"type": "websocket.accept"}, {"type": "websocket.accept"}],
    "both": [{"type": "websocket.accept"},
             {"type": "websocket.send", "text": "hello world", "bytes": b"hello world"}],
    "text-bytes": [{"type": "websocket.accept"}, {"type": "websocket.send", "text": b"hello"}],
    "close-str": [{"type": "websocket.accept"}, {"type": "websocket.close", "code": "4000"}],
    "unknown": [{"type": "websocket.accept"}, {"type": "websocket.push"}],
}


async def send_recorded(consumer, messages):
    """Send ``messages``, then a body/text a valid phase would relay; record what raised."""
    tag = consumer.scope["query_string"].decode()
    try:
        for message in messages:
            await consumer.send(message)
    except Exception as exc:
        await asyncio.to_thread(record, f"split:bad:{tag}", type(exc).__name__)
        raise
    await asyncio.to_thread(record, f"split:bad:{tag}", "ok")


class BadHttpConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        case = self.scope["url_route"]["kwargs"]["case"]
        await send_recorded(self, BAD_HTTP[case] + [
            {"type": "http.response.body", "body": b"hello world"}])


class BadWebsocketConsumer(AsyncConsumer):
    async def websocket_connect(self, event):
        case = self.scope["url_route"]["kwargs"]["case"]
        await send_recorded(self, BAD_WS[case] + [
            {"type": "websocket.send", "text": "hello world"}])


class BadSyncWebsocketConsumer(SyncConsumer):
    """A refused send from a consumer's thread (async_to_sync): named in the log too."""

    def websocket_connect(self, event):
        self.send({"type": "websocket.accept"})
        self.send({"type": "websocket.send", "text": 42})


class ScopeConsumer(AsyncHttpConsumer):
    """The scope's client, server and scheme, with their types (Daphne gives lists)."""

    async def handle(self, body):
        scope = self.scope
        await self.send_response(200, json.dumps({
            "client": scope.get("client"), "server": scope.get("server"),
            "scheme": scope.get("scheme"),
            "types": [type(scope.get(k)).__name__ for k in ("client", "server")],
        }).encode(), headers=[(b"content-type", b"application/json")])


async def hold(scope, receive, send):
    """Waits for its disconnect and records it (``split:hold:<query>``); with a query starting
    ``start``, begins a streamed response first. (An HTTP timeout's subject.)"""
    tag = scope["query_string"].decode()
    await receive()  # the request
    if tag.startswith("start"):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"begun\n", "more_body": True})
    started = time.monotonic()
    event = await receive()
    await asyncio.to_thread(record, f"split:hold:{tag}",
                            f"{event['type']} after {time.monotonic() - started:.0f}s")
