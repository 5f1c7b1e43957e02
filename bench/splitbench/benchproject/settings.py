"""The split benchmark's project: the same consumers for the monolith and for channels-fleet.

BENCH_LAYER=channels_redis: channels_redis on BENCH_REDIS_URL (socket_timeout=None: redis-py 8
would time its blocking reads out after 5 s). BENCH_LAYER=fleet: our layer.
"""

import os

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
DATABASES = {}
USE_TZ = True
TIME_ZONE = "UTC"
ASGI_APPLICATION = "benchproject.asgi.application"
_URLS = os.environ["BENCH_REDIS_URL"].split(",")
if os.environ.get("BENCH_LAYER") == "channels_redis":
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": u, "socket_timeout": None, "max_connections": 100000}
                             for u in _URLS],
                   "prefix": "bench", "capacity": 10000},
    }}
else:
    CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_fleet.layers.RedisClusterChannelLayer",
        "CONFIG": {"hosts": _URLS, "prefix": "bench", "capacity": 10000},
    }}
