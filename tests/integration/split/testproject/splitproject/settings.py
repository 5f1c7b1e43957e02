"""Django settings of the split tests' project: every consumer kind, on our layer."""

import os

SECRET_KEY = "split-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "splitproject.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SPLIT_DB", ":memory:"),
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
USE_TZ = True
TIME_ZONE = "UTC"
ASGI_APPLICATION = "splitproject.asgi.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_fleet.layers.RedisClusterChannelLayer",
        "CONFIG": {
            "hosts": os.environ["CHANNELS_FLEET_REDIS_URL"].split(","),
            "prefix": "splitproj",
        },
    }
}
