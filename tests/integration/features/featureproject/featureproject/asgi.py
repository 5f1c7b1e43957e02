import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "featureproject.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402
from support.bindingapp.bindings import CardBinding  # noqa: E402

from channels_fleet.multiplex import Demultiplexer  # noqa: E402


class Echo(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        user = self.scope["user"]
        await self.send_json({"echo": content, "user": user.username or "anonymous",
                              "worker": os.getpid()})


class Desk(Demultiplexer):
    consumers = {"echo": Echo, "cards": CardBinding.consumer}


application = ProtocolTypeRouter({
    "http": django_asgi,
    "websocket": AuthMiddlewareStack(URLRouter([path("ws/desk/", Desk.as_asgi())])),
})
