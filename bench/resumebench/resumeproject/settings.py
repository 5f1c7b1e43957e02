"""The resume bench's project (bench/resume.py): one consumer, on our layer."""

import os

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
DATABASES = {}
USE_TZ = True
TIME_ZONE = "UTC"
ASGI_APPLICATION = "resumeproject.asgi.application"
CHANNEL_LAYERS = {"default": {
    "BACKEND": "channels_fleet.layers.RedisClusterChannelLayer",
    "CONFIG": {"hosts": os.environ["CHANNELS_FLEET_REDIS_URL"].split(","), "prefix": "rbench"},
}}
