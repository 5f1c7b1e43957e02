"""Django project of the feature tests: the Demultiplexer and Binding served through the split.

Its models and bindings are tests/support/bindingapp (tests/ on PYTHONPATH). Environment:
FEATURE_DB (sqlite file shared by every process), CHANNELS_FLEET_REDIS_URL.
"""

import os

SECRET_KEY = "feature-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "support.bindingapp",
]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["FEATURE_DB"]}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# Signed cookies: a login made by one process is read by the workers without a session table.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
USE_TZ = True
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_fleet.layers.RedisClusterChannelLayer",
        "CONFIG": {"hosts": os.environ["CHANNELS_FLEET_REDIS_URL"].split(","), "prefix": "feat"},
    }
}
