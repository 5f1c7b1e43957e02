"""The chat room over three transports, all on the room's group ``chat_<room>``:

- ``ChatConsumer``: WebSocket ``/ws/chat/<room>/`` (also the "chat" stream of the board);
- ``LongPoll``: HTTP long polling ``/poll/<room>/`` (GET waits for messages, POST posts), the
  fallback when WebSockets are blocked;
- ``RoomEvents``: Server-Sent Events ``/poll/events/<room>/``, a streaming HTTP response.

Anyone may read a room; posting needs a signed-in user (the session of the web tier's login).
"""

import asyncio
import json
from urllib.parse import urlsplit

from channels.exceptions import ChannelFull, StopConsumer
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from . import rooms
from .status import served_by_async

#: After the first message a long poll waits this long for more, so bursts come in one reply.
POLL_LINGER = 0.05


class ChatConsumer(AsyncWebsocketConsumer):
    """The room over a WebSocket, with a live member list kept by the members themselves
    (no store): each joins and leaves out loud; a newcomer asks "who is here?" and each member
    answers to its channel. Presence frames go only to clients that asked for them (a
    ``{"type": "status"}`` frame), so a plain client sees chat messages only."""

    presence = False
    moving = False

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = rooms.group_name(self.room)
        self.me = {"id": self.channel_name,
                   "user": rooms.user_name(self.scope.get("user")) or "anonymous"}
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        if not self.scope.get("fleet", {}).get("rehomed"):  # a moved socket never left
            await self.channel_layer.group_send(self.group, {"type": "presence.join", **self.me})

    async def websocket_disconnect(self, message):
        # The socket moves to another worker (channels-fleet re-homing): the member stays,
        # with the same channel name and groups, so nobody is told it left.
        self.moving = bool(message.get("fleet_rehoming"))
        await super().websocket_disconnect(message)

    async def disconnect(self, code):
        if self.moving:
            return
        await self.channel_layer.group_send(self.group, {"type": "presence.leave", **self.me})
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = json.loads(text_data)
        except (TypeError, ValueError):
            return
        if not isinstance(frame, dict):
            return
        if frame.get("type") == "status":
            await self._status()
            return
        if "message" not in frame:
            return
        name = rooms.user_name(self.scope.get("user"))
        if name is None:
            await self.send(text_data=json.dumps({"error": "sign in to post"}))
            return
        await rooms.post(self.channel_layer, self.room, name, frame["message"], via="websocket")

    async def _status(self):
        """The page's status strip (which interface and which worker serve this socket; it
        asks again now and then, so a re-homed socket shows its new worker) and, the first
        time, the member list: ``fresh`` tells the page to start its list again."""
        fresh = not self.presence
        self.presence = True
        await self.send(text_data=json.dumps({
            "type": "status", "user": rooms.user_name(self.scope.get("user")),
            **(await served_by_async(self.scope)), "fresh": fresh, "me": self.me}))
        if fresh:
            await self.channel_layer.group_send(
                self.group, {"type": "presence.hello", "reply_to": self.channel_name})

    async def chat_message(self, event):
        await self.send(text_data=json.dumps({"message": event["message"], "user": event["user"]}))

    async def presence_hello(self, event):
        if event["reply_to"] != self.channel_name:
            try:
                await self.channel_layer.send(event["reply_to"],
                                              {"type": "presence.here", **self.me})
            except ChannelFull:
                # The newcomer's channel is full (it is still starting, e.g. re-homed with many
                # others while the room is busy): its member list misses this one until the
                # next join. Not a reason to close this member's socket with 1011.
                pass

    async def presence_join(self, event):
        await self._presence("join", event)

    async def presence_here(self, event):
        await self._presence("join", event)

    async def presence_leave(self, event):
        await self._presence("leave", event)

    async def _presence(self, what, event):
        if self.presence and event["id"] != self.channel_name:
            await self.send(text_data=json.dumps({
                "type": "presence", what: {"id": event["id"], "user": event["user"]}}))


def _json(data) -> bytes:
    return json.dumps(data).encode()


def _same_origin(scope) -> bool:
    """A POST from a page of this site: its Origin (sent by browsers) names the Host it posts to.
    With the JSON content type required too, another site's page cannot post for its visitor."""
    headers = dict(scope.get("headers", []))
    origin = headers.get(b"origin")
    if origin is None:
        return True  # not a browser
    return urlsplit(origin.decode("latin-1")).netloc == headers.get(b"host", b"").decode("latin-1")


class _StayingHttpConsumer(AsyncHttpConsumer):
    """Channels 4's ``AsyncHttpConsumer`` stops right after ``handle()``; these consumers keep
    their response open after it and answer from group message handlers (the consumer's own
    dispatch loop), so they stay until they finish the response or the client goes."""

    # The room's presence messages (the WebSocket members' list) are not for HTTP clients.
    async def presence_join(self, event):
        pass

    presence_leave = presence_hello = presence_here = presence_join

    async def http_request(self, message):
        if "body" in message:
            self.body.append(message["body"])
        if not message.get("more_body"):
            await self.handle(b"".join(self.body))

    async def finish(self, status, data=None):
        """The final response; then the consumer stops."""
        body = b"" if data is None else _json(data)
        await self.send_response(status, body, headers=[
            (b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store")])
        await self.disconnect()
        raise StopConsumer()


class LongPoll(_StayingHttpConsumer):
    """GET: wait up to ``CHAT_POLL_TIMEOUT`` seconds for the room's messages (200 with them, or
    204: poll again). POST ``{"message": ...}`` (JSON, signed in): post to the room.

    A poll is a group member only while it waits: a message sent between two polls (one round
    trip) misses that client. A room that must not lose any would keep a short history (e.g. a
    Redis stream) and poll with a cursor."""

    group = None
    timer = None

    async def handle(self, body):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        method = self.scope["method"]
        if method == "POST":
            await self._post(body)
        elif method == "GET":
            self.inbox = []
            self.group = rooms.group_name(self.room)
            await self.channel_layer.group_add(self.group, self.channel_name)
            self.timer = asyncio.ensure_future(self._later(settings.CHAT_POLL_TIMEOUT))
        else:
            await self.finish(405, {"error": "GET or POST"})

    async def _later(self, delay):
        # A timeout arrives as a message on the consumer's channel, so the dispatch loop
        # (not a stray task) answers it, after any message that came first.
        await asyncio.sleep(delay)
        await self.channel_layer.send(self.channel_name, {"type": "poll.flush"})

    async def _post(self, body):
        headers = dict(self.scope.get("headers", []))
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip()
        name = rooms.user_name(self.scope.get("user"))
        if ctype != b"application/json" or not _same_origin(self.scope):
            await self.finish(403, {"error": "JSON from this site only"})
        if name is None:
            await self.finish(403, {"error": "sign in to post"})
        try:
            message = json.loads(body)["message"]
        except (ValueError, TypeError, KeyError):
            await self.finish(400, {"error": 'expected {"message": ...}'})
        await rooms.post(self.channel_layer, self.room, name, message, via="long poll")
        await self.finish(202, {"posted": True})

    async def chat_message(self, event):
        self.inbox.append({"message": event["message"], "user": event["user"]})
        if len(self.inbox) == 1:
            # Answer shortly, with whatever else arrives meanwhile (a burst in one reply).
            self.timer.cancel()
            self.timer = asyncio.ensure_future(self._later(POLL_LINGER))

    async def poll_flush(self, event):
        if self.inbox:
            await self.finish(200, {"messages": self.inbox,
                                     "served_by": await served_by_async(self.scope)})
        await self.finish(204)

    async def disconnect(self):
        if self.timer is not None:
            self.timer.cancel()
        if self.group is not None:
            group, self.group = self.group, None
            await self.channel_layer.group_discard(group, self.channel_name)


class RoomEvents(_StayingHttpConsumer):
    """Server-Sent Events: one streaming response (``more_body``) per client; an ``event:
    status`` first, then one ``data:`` event per message, and a comment every 15 s to keep
    proxies from timing the stream out."""

    KEEPALIVE = 15.0
    group = None
    keepalive = None

    async def handle(self, body):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = rooms.group_name(self.room)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_headers(headers=[
            (b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-store"),
            (b"X-Accel-Buffering", b"no")])
        status = {"user": rooms.user_name(self.scope.get("user")),
                  **(await served_by_async(self.scope))}
        await self.send_body(f"event: status\ndata: {json.dumps(status)}\n\n".encode(),
                             more_body=True)
        self.keepalive = asyncio.ensure_future(self._keepalive())

    async def _keepalive(self):
        while True:
            await asyncio.sleep(self.KEEPALIVE)
            await self.channel_layer.send(self.channel_name, {"type": "sse.keepalive"})

    async def sse_keepalive(self, event):
        await self.send_body(b": keepalive\n\n", more_body=True)

    async def chat_message(self, event):
        data = json.dumps({"message": event["message"], "user": event["user"]})
        await self.send_body(f"data: {data}\n\n".encode(), more_body=True)

    async def disconnect(self):
        if self.keepalive is not None:
            self.keepalive.cancel()
        if self.group is not None:
            group, self.group = self.group, None
            await self.channel_layer.group_discard(group, self.channel_name)
