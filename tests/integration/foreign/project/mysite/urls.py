from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from chat import views as chat_views

urlpatterns = [
    path("", chat_views.index, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("chat/", include("chat.urls")),
    path("admin/", admin.site.urls),
]
