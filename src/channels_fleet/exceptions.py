"""Errors raised by channels-fleet; one class per failure."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import NoPermissionError

STARTUP_FAILURE = 3  # exit status of a service that could not start (as uvicorn)


class LayerError(Exception):
    """Base class of every channel layer failure raised by channels-fleet."""


class LayerConfigError(LayerError, ImproperlyConfigured):
    """The layer's CHANNEL_LAYERS CONFIG cannot work; the message names the setting."""


class RedisVersionError(LayerConfigError):
    """The Redis server is older than 7.0 (the layer needs BLMPOP)."""


class LayerUnavailable(LayerError, ConnectionError):
    """Redis could not be reached (or kept failing) for longer than ``retry_timeout``."""


class RedisPermissionError(LayerError, NoPermissionError):
    """The Redis user may not run a command the layer sends (its ACL); the message names the
    server, the command (a script's with the commands it calls), the key and the rule to add."""


class RedisAccessError(LayerConfigError):
    """Redis turned this process away before any command ran: its certificate failed the check
    (an unknown CA, another host name), or AUTH was refused (a wrong user or password). The
    message names the URL (no password), the command and the cause; retrying cannot help."""


class IllegalTransition(RuntimeError):
    """A connection was asked to move to a state its current one does not lead to."""


class PortUnavailable(Exception):
    """A service could not bind one of its ports; the message names the port, its setting and
    why (in use, below 1024 without the right)."""


class WireError(ValueError):
    """A relay message that does not have the shape of relay/wire.py's formats."""


class KubeApiError(Exception):
    """A request to the Kubernetes API server failed; the message names the method, the path,
    the status and the server's reason. `status` is the HTTP status (0: no reply)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ResumeProtocolError(ValueError):
    """A resumable-session message (channels-fleet.resume.v1) that breaks the protocol: a
    malformed header, an unknown kind, a sequence number that skips. The socket closes with
    1002 (a server) or 4002 (a client); the message names the cause."""


class SessionEnded(ConnectionError):
    """A resumable session ended for good: the app closed it, it expired, a protocol error, or
    the client gave up reconnecting. ``code`` and ``reason`` are the final close's."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"session ended: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason
