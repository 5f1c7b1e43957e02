from django.urls import path

from .consumers import BoardSocket

websocket_urlpatterns = [
    path("ws/board/", BoardSocket.as_asgi()),
]
