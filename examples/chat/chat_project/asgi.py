"""ASGI entry point: what ``channels-fleet worker chat_project.asgi:application`` runs.

``--channels moderation`` also serves the ``moderation`` background channel (the "channel"
entry below); the interfaces relay every HTTP request and WebSocket here.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chat_project.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from board.routing import websocket_urlpatterns as board_websocket_urlpatterns  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from chat.moderation import Moderator  # noqa: E402
from chat.routing import http_urlpatterns, websocket_urlpatterns  # noqa: E402
from django.urls import re_path  # noqa: E402
from fleetview.routing import websocket_urlpatterns as fleet_websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    # Long polling and SSE: consumers that see the session's user; the rest is Django.
    "http": URLRouter([
        *http_urlpatterns,
        re_path(r"", django_asgi_app),
    ]),
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(
        websocket_urlpatterns + board_websocket_urlpatterns + fleet_websocket_urlpatterns))),
    "channel": ChannelNameRouter({"moderation": Moderator.as_asgi()}),
})
