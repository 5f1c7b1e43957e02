"""Settings of the demo chat: an ordinary Channels 4 project, nothing fleet-specific but the layer.

Environment: ``CHANNELS_FLEET_REDIS_URL`` (the layer), ``DATABASE_URL`` (``sqlite:///path`` or
``postgres://user:pass@host:port/name``; default: SQLite under ``.run/``), ``DJANGO_SECRET_KEY``,
``DJANGO_DEBUG``, ``DJANGO_ALLOWED_HOSTS`` (comma-separated).
"""

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = Path(os.environ.get("CHAT_RUN_DIR", BASE_DIR.parent.parent / ".run"))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "channels_fleet",  # its static files: FleetSocket (channels_fleet/fleet-socket.js)
    "chat",
    "board",
    "fleetview",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "chat_project.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
WSGI_APPLICATION = "chat_project.wsgi.application"
ASGI_APPLICATION = "chat_project.asgi.application"


def database_from_url(url: str) -> dict:
    """The few DATABASE_URL forms the demo needs, without another dependency."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        name = unquote(parts.path[1:]) or ":memory:"
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": name}
    if parts.scheme in ("postgres", "postgresql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts.path.lstrip("/"),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    raise ValueError(f"DATABASE_URL scheme {parts.scheme!r} is not supported (sqlite, postgres)")


DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL") or f"sqlite:///{RUN_DIR / 'chat.sqlite3'}"
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_fleet.layers.RedisClusterChannelLayer",
        "CONFIG": {
            "hosts": os.environ.get(
                "CHANNELS_FLEET_REDIS_URL", "redis://127.0.0.1:6379"
            ).split(","),
            "prefix": "chat",
        },
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

# Sign in on the web tier; the session cookie is per host, not per port, so the same login
# reaches the interfaces (sockets, long polling) on other ports of the same host.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "index"
SESSION_COOKIE_SAMESITE = "Lax"  # sent on same-site requests: every port of this host
CSRF_TRUSTED_ORIGINS = [
    origin.strip() for origin in os.environ.get(
        "DJANGO_CSRF_TRUSTED_ORIGINS",
        "http://localhost:8000,http://localhost:8001,http://localhost:8002,"
        "http://127.0.0.1:8000,http://127.0.0.1:8001,http://127.0.0.1:8002",
    ).split(",") if origin.strip()
]

# The chat. CHAT_MODERATION=1: messages go through the "moderation" background channel (a worker
# must run `--channels moderation`); 0: straight to the room.
CHAT_MODERATION = os.environ.get("CHAT_MODERATION", "0") == "1"
CHAT_BANNED_WORDS = os.environ.get("CHAT_BANNED_WORDS", "darn,heck,blast").split(",")
# CHAT_GUEST_POSTS=1: signed-out visitors post as "guest". For stacks with no database shared by
# web and workers (the container and chart e2e runs), where a session cannot follow the user.
CHAT_GUEST_POSTS = os.environ.get("CHAT_GUEST_POSTS", "0") == "1"
CHAT_POLL_TIMEOUT = float(os.environ.get("CHAT_POLL_TIMEOUT", "25"))
# The /fleet/ page's "Roll the workers" button (staff only) asks `make run` to roll them through
# its control socket (fleetview/roll.py); `make run` sets this. Empty: no button.
CHAT_ROLL_SOCKET = os.environ.get("CHAT_ROLL_SOCKET", "")
