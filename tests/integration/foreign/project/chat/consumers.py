import asyncio
import json
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
from channels.consumer import SyncConsumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import (
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)

from django.db.models.signals import post_save
from django.dispatch import receiver
from services import rooms

from .models import Inbox, Message


@receiver(post_save, sender=Message)
def follow_message(sender, instance, created, **kwargs):
    """Connected when asgi.py's routing imports this module (as djangochannelsrestframework's
    ``model_observer`` connects its receivers), not by AppConfig.ready."""
    if created and instance.room.startswith("followed"):
        async_to_sync(get_channel_layer().group_send)(
            f"chat_{instance.room}", {"type": "chat.message", "message": f"followed: {instance.text}"}
        )


class ChatConsumer(WebsocketConsumer):
    """The Channels tutorial's synchronous chat consumer."""

    def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = rooms.group_name(self.room_name)
        async_to_sync(self.channel_layer.group_add)(self.room_group_name, self.channel_name)
        self.accept()

    def disconnect(self, close_code):
        async_to_sync(self.channel_layer.group_discard)(self.room_group_name, self.channel_name)

    def receive(self, text_data):
        message = json.loads(text_data)["message"]
        async_to_sync(self.channel_layer.group_send)(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    def chat_message(self, event):
        self.send(text_data=json.dumps({"message": event["message"]}))


class AsyncChatConsumer(AsyncWebsocketConsumer):
    """The tutorial's asynchronous version."""

    async def connect(self):
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = f"chat_{self.room_name}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code):
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data):
        message = json.loads(text_data)["message"]
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    async def chat_message(self, event):
        await self.send(text_data=json.dumps({"message": event["message"]}))


class EchoJsonConsumer(JsonWebsocketConsumer):
    def connect(self):
        self.accept()

    def receive_json(self, content, **kwargs):
        headers = dict(self.scope["headers"])
        self.send_json({
            "echo": content,
            "user": self.scope["user"].username,
            "query": parse_qs(self.scope["query_string"].decode()),
            "agent": headers.get(b"user-agent", b"").decode(),
        })


class HistoryConsumer(AsyncWebsocketConsumer):
    """Saves every message with the ORM and answers with the room's history."""

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room_name"]
        await self.accept()
        await self.send(text_data=json.dumps({"history": await self.history()}))

    async def receive(self, text_data=None, bytes_data=None):
        await self.save(text_data)
        await self.send(text_data=json.dumps({"history": await self.history()}))

    @database_sync_to_async
    def save(self, text):
        user = self.scope["user"]
        Message.objects.create(room=self.room, text=text,
                               author=user.username if user.is_authenticated else "")

    @database_sync_to_async
    def history(self):
        return [m.text for m in Message.objects.filter(room=self.room)]


class WhoAmIConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=4401)
            return
        await self.accept()
        await self.send(text_data=json.dumps({
            "user": user.username,
            "tag": self.scope["url_route"]["kwargs"]["tag"],
            "session": self.scope["session"].session_key is not None,
        }))


class CloseConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await self.close(code=self.scope["url_route"]["kwargs"]["code"])


class RejectConsumer(WebsocketConsumer):
    def connect(self):
        self.close()  # before accept: the handshake is refused (HTTP 403)


class EchoConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        protocols = self.scope["subprotocols"]
        await self.accept(subprotocol=protocols[0] if protocols else None)

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None:
            await self.send(bytes_data=bytes_data[::-1])
        else:
            await self.send(text_data=text_data)


class InboxConsumer(AsyncWebsocketConsumer):
    """Registers its channel name in a row so that views can reach this very socket."""

    async def connect(self):
        self.owner = self.scope["url_route"]["kwargs"]["owner"]
        await self.register()
        await self.accept()

    @database_sync_to_async
    def register(self):
        inbox, _ = Inbox.objects.get_or_create(owner=self.owner)
        inbox.channels["socket"] = self.channel_name
        inbox.save()

    async def inbox_message(self, event):
        await self.send(text_data=json.dumps({"inbox": event["text"]}))


class GoodbyeConsumer(AsyncWebsocketConsumer):
    """Accepts with an extra header; says goodbye with a close reason."""

    async def connect(self):
        await self.accept(headers=[(b"x-room-version", b"7")])

    async def receive(self, text_data=None, bytes_data=None):
        await self.close(code=4000, reason="goodbye")


class CrashConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        raise RuntimeError("a bug in the project")


class PresenceConsumer(WebsocketConsumer):
    """Records leaving in the database from its disconnect handler."""

    def connect(self):
        self.accept()

    def disconnect(self, close_code):
        Message.objects.create(room="presence", text=f"left {close_code}")


class BroadcastConsumer(AsyncWebsocketConsumer):
    """Joins its groups through the ``groups`` attribute."""

    groups = ["broadcast"]

    async def announce(self, event):
        await self.send(text_data=event["text"])


class ThumbnailConsumer(SyncConsumer):
    """A background channel (``manage.py runworker thumbnails``)."""

    def make_thumbnail(self, message):
        Message.objects.create(room="thumbnails", text=message["name"])
        async_to_sync(self.channel_layer.group_send)(
            "broadcast", {"type": "announce", "text": f"thumbnail {message['name']} ready"}
        )


class TickerConsumer(AsyncHttpConsumer):
    """Server-sent events as the tutorials write them (and as GraphQL-over-SSE subscriptions
    stream): ``handle()`` sends ticks until it is stopped, never reading ``http.disconnect``."""

    async def handle(self, body):
        await self.send_headers(headers=[(b"Content-Type", b"text/event-stream"),
                                         (b"Cache-Control", b"no-cache")])
        tick = 0
        try:
            while True:
                await self.send_body(f"data: tick {tick}\n\n".encode(), more_body=True)
                tick += 1
                await asyncio.sleep(0.1)
        finally:
            await database_sync_to_async(Message.objects.create)(
                room="ticker", text=self.scope["url_route"]["kwargs"]["tag"])
