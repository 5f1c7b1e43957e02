from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("whoami/", views.whoami),
    path("echo/", views.echo),
    path("stream/", views.stream),
    path("download/", views.download),
    path("thumbnail/<str:name>/", views.thumbnail),
    path("<str:room_name>/broadcast/", views.broadcast),
    path("<str:room_name>/post/", views.post_message),
    path("notify/<str:owner>/", views.notify),
]
