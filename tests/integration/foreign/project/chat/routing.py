from django.urls import path, re_path

from . import consumers

websocket_urlpatterns = [
    re_path(r"ws/chat/(?P<room_name>\w+)/$", consumers.ChatConsumer.as_asgi()),
    re_path(r"ws/achat/(?P<room_name>\w+)/$", consumers.AsyncChatConsumer.as_asgi()),
    path("ws/json/", consumers.EchoJsonConsumer.as_asgi()),
    re_path(r"ws/history/(?P<room_name>[-\w]+)/$", consumers.HistoryConsumer.as_asgi()),
    path("ws/whoami/<str:tag>/", consumers.WhoAmIConsumer.as_asgi()),
    path("ws/close/<int:code>/", consumers.CloseConsumer.as_asgi()),
    path("ws/private/", consumers.RejectConsumer.as_asgi()),
    path("ws/echo/", consumers.EchoConsumer.as_asgi()),
    re_path(r"ws/inbox/(?P<owner>\w+)/$", consumers.InboxConsumer.as_asgi()),
]
websocket_urlpatterns += [
    path("ws/goodbye/", consumers.GoodbyeConsumer.as_asgi()),
    path("ws/crash/", consumers.CrashConsumer.as_asgi()),
    path("ws/presence/", consumers.PresenceConsumer.as_asgi()),
    path("ws/broadcast/", consumers.BroadcastConsumer.as_asgi()),
]
