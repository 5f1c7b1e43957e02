from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("chat.urls")),
    path("", include("board.urls")),
    path("", include("fleetview.urls")),
    path("admin/", admin.site.urls),
    # login/ and logout/ (Django's LoginView, LogoutView), named "login" and "logout".
    path("accounts/", include("django.contrib.auth.urls")),
]
