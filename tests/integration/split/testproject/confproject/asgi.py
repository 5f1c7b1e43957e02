"""A project configured in its ASGI module (``settings.configure()``, no settings module), as
``daphne confproject.asgi:application`` runs it. Its layer is Channels' in-memory one, which
the worker adopts: a group spans the workers."""

import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="configured-in-asgi-tests-only",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    USE_TZ=True,
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class GroupConsumer(AsyncWebsocketConsumer):
    """Joins the group "conf"; "whoami" answers its worker's pid, anything else goes to all."""

    async def connect(self):
        await self.channel_layer.group_add("conf", self.channel_name)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "whoami":
            await self.send(str(os.getpid()))
        else:
            await self.channel_layer.group_send("conf", {"type": "conf.message",
                                                         "text": text_data})

    async def conf_message(self, event):
        await self.send(f"{os.getpid()}:{event['text']}")

    async def disconnect(self, code):
        await self.channel_layer.group_discard("conf", self.channel_name)


application = ProtocolTypeRouter({
    "websocket": URLRouter([path("ws/group/", GroupConsumer.as_asgi())]),
})
