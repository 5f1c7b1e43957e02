from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import include, path, re_path

urlpatterns = [
    path("", include("chat.urls")),
    path("", include("board.urls")),
    path("", include("fleetview.urls")),
    path("admin/", admin.site.urls),
    # login/ and logout/ (Django's LoginView, LogoutView), named "login" and "logout".
    path("accounts/", include("django.contrib.auth.urls")),
    # The apps' static files (the pages' FleetSocket, channels_fleet/fleet-socket.js), read
    # from the apps, DEBUG or not: the demo's images and `make run` have no collectstatic step
    # and no static file server. A real project serves collectstatic's output (WhiteNoise, a
    # CDN or the Ingress); Django's view is for small sites like this one.
    re_path(r"^static/(?P<path>.*)$", serve, {"insecure": True}),
]
