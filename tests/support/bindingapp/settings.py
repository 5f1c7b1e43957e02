"""Django settings for the binding tests, shared by the test process and the "web tier"
subprocess it starts, so both write one sqlite file and push through one channel layer.

Environment: BINDINGAPP_DB (sqlite path), BINDINGAPP_LAYER (backend path), BINDINGAPP_HOSTS
(comma-separated redis URLs), BINDINGAPP_PREFIX (layer prefix).
"""

import os
import tempfile

SECRET_KEY = "bindingapp-tests-only"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "support.bindingapp"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BINDINGAPP_DB")
        or os.path.join(tempfile.gettempdir(), f"bindingapp-{os.getpid()}.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

_hosts = [h for h in os.environ.get("BINDINGAPP_HOSTS", "").split(",") if h]
_backend = os.environ.get("BINDINGAPP_LAYER", "channels_redis.core.RedisChannelLayer")
if _backend.startswith("channels_redis"):
    # redis-py 8's 5 s default socket_timeout breaks channels_redis's blocking reads.
    _hosts = [{"address": h, "socket_timeout": None} for h in _hosts]
CHANNEL_LAYERS = (
    {"default": {"BACKEND": _backend, "CONFIG": {
        "hosts": _hosts, "prefix": os.environ.get("BINDINGAPP_PREFIX", "asgi")}}}
    if _hosts else {}
)
