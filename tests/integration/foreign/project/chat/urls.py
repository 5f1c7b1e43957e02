from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("whoami/", views.whoami),
    path("echo/", views.echo),
    path("stream/", views.stream),
    path("<str:room_name>/broadcast/", views.broadcast),
    path("notify/<str:owner>/", views.notify),
]
