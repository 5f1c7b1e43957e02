import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "splitproject.settings")

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path, re_path  # noqa: E402

django_asgi = get_asgi_application()

from . import consumers  # noqa: E402

application = ProtocolTypeRouter({
    "http": URLRouter([
        path("stream/", consumers.StreamConsumer.as_asgi()),
        path("slow/", consumers.SlowConsumer.as_asgi()),
        path("bad/<str:case>/", consumers.BadHttpConsumer.as_asgi()),
        path("scope/", consumers.ScopeConsumer.as_asgi()),
        path("hold/", consumers.hold),
        re_path(r"", django_asgi),
    ]),
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter([
        path("ws/echo/<str:name>/", consumers.EchoConsumer.as_asgi()),
        path("ws/sync/", consumers.SyncEchoConsumer.as_asgi()),
        path("ws/json/", consumers.JsonEchoConsumer.as_asgi()),
        path("ws/close/<int:code>/", consumers.CloseConsumer.as_asgi()),
        path("ws/refuse/", consumers.RefuseConsumer.as_asgi()),
        path("ws/crash-connect/", consumers.CrashOnConnectConsumer.as_asgi()),
        path("ws/norehome/", consumers.NoRehomeConsumer.as_asgi()),
        path("ws/flood/", consumers.FloodConsumer.as_asgi()),
        path("ws/room/<str:room>/", consumers.RoomConsumer.as_asgi()),
        path("ws/session/<str:name>/", consumers.SessionConsumer.as_asgi()),
        path("ws/bad/sync/", consumers.BadSyncWebsocketConsumer.as_asgi()),
        path("ws/bad/<str:case>/", consumers.BadWebsocketConsumer.as_asgi()),
    ]))),
    "channel": ChannelNameRouter({"split-tasks": consumers.TaskConsumer.as_asgi()}),
})
