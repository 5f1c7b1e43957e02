from channels.auth import AuthMiddlewareStack
from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/chat/<str:room>/", consumers.ChatConsumer.as_asgi()),
]

# HTTP consumers, seeing the session's user. Under /poll/: the chart's Ingress sends /ws/
# and /poll/ to the interfaces.
http_urlpatterns = [
    path("poll/events/<str:room>/", AuthMiddlewareStack(consumers.RoomEvents.as_asgi())),
    path("poll/<str:room>/", AuthMiddlewareStack(consumers.LongPoll.as_asgi())),
]
