"""An ordinary small Channels project, as `startproject` and the Channels tutorial leave it."""

SECRET_KEY = "readme-steps-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = "myproject.urls"
WSGI_APPLICATION = "myproject.wsgi.application"
ASGI_APPLICATION = "myproject.asgi.application"
DATABASES: dict = {}
USE_TZ = True
# As in development; the worker and web services serve it on CHANNELS_FLEET_REDIS_URL.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
