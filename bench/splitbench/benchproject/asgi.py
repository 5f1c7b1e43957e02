import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")

import django  # noqa: E402

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)


class Broadcast(AsyncWebsocketConsumer):
    groups = ["bcast"]

    async def bench_message(self, event):
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter({
    "websocket": URLRouter([
        path("ws/echo/", Echo.as_asgi()),
        path("ws/bcast/", Broadcast.as_asgi()),
    ]),
})
