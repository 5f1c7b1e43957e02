"""Settings read from ``CHANNELS_FLEET_*`` variables: the machinery and what services share.

One frozen settings object per service: ``InterfaceSettings`` (``interface/settings.py``),
``WorkerSettings`` (``worker/settings.py``), both ``ServiceSettings``, and ``WebSettings`` here.
Flags override the environment: ``InterfaceSettings.from_env(port=9000)``. Every value is
checked in ``__post_init__`` and a bad one raises :class:`SettingsError` naming the variable.

    settings = WebSettings.from_env(wsgi_app="chat_project.wsgi:application")
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from .redis_access import RedisAccess

ENV_PREFIX = "CHANNELS_FLEET_"
#: First part of every relay key in Redis unless CHANNELS_FLEET_KEY_PREFIX says otherwise
#: (the key names themselves: relay/wire.py). Light on purpose: the web tier imports this
#: module before prometheus_client may be imported.
DEFAULT_KEY_PREFIX = "fleet"
#: Without CHANNELS_FLEET_METRICS_PORT, several services run on one host with no setting:
#: an interface or web tier serves its probes on its public port + METRICS_PORT_OFFSET (8001 ->
#: 9001), a worker (no public port) on the first free port of WORKER_METRICS_PORTS. The chart
#: and the images set the port explicitly (9100).
METRICS_PORT_OFFSET = 1000
WORKER_METRICS_PORTS = range(9100, 9200)
#: CHANNELS_FLEET_LOOP's choices (services/eventloop.py).
EVENT_LOOPS = ("auto", "asyncio", "uvloop")
#: What CHANNELS_FLEET_KEY_PREFIX may be: no braces, which would move keys' cluster slots.
KEY_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_key_prefix(prefix: str) -> None:
    """Raise SettingsError unless ``prefix`` may start the relay's Redis keys."""
    if not KEY_PREFIX_PATTERN.fullmatch(prefix):
        raise SettingsError(
            f"CHANNELS_FLEET_KEY_PREFIX={prefix!r}: use 1-64 letters, digits, "
            "'-', '_' or '.' (no braces: they would change the keys' cluster slots)"
        )


class SettingsError(ValueError):
    """A CHANNELS_FLEET_* setting is missing or has a bad value."""


def split_csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


# Field annotations are strings (postponed evaluation): parse by their spelling.
_PARSERS: dict[str, Any] = {
    "int": int,
    "int | None": int,
    "float": float,
    "str": str,
    "bool": lambda v: v.strip().lower() in ("1", "true", "yes", "on"),
    "tuple[str, ...]": split_csv,
}


@dataclass(frozen=True)
class EnvSettings:
    """What every service's settings do: read ``CHANNELS_FLEET_<FIELD>``, check values."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Build from ``CHANNELS_FLEET_<FIELD>`` variables; non-None ``overrides`` win."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            parser = _PARSERS[str(f.type)]
            try:
                values[f.name] = parser(raw)
            except ValueError as exc:
                raise SettingsError(f"{name}={raw!r} is not a valid {f.type}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def _split(self, *names: str) -> None:
        """Comma-separated strings given for tuple fields (by a flag) become tuples."""
        for name in names:
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, split_csv(getattr(self, name)))

    def _positive(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be > 0")


@dataclass(frozen=True)
class RedisSettings(EnvSettings):
    """Which Redis a process uses and how it gets in: URLs, user, password, CA.

    ``redis_url`` holds the URLs as every client connects: ``CHANNELS_FLEET_REDIS_URL`` with
    the user and password of ``CHANNELS_FLEET_REDIS_USERNAME`` / ``_PASSWORD`` (when set) and,
    on rediss:// URLs, the CA bundle of ``CHANNELS_FLEET_REDIS_CA_FILE`` (redis_access.py).

        RedisSettings.from_env().redis_url  # ('rediss://fleet-worker:...@redis:6379?...',)
    """

    #: Redis URLs (cluster startup nodes or one Redis).
    redis_url: tuple[str, ...] = ()
    #: The Redis user (ACL), overriding the URLs' (docs/redis-acl.md: one per role).
    redis_username: str = ""
    #: Its password, overriding the URLs': no URL escaping needed.
    redis_password: str = field(default="", repr=False)
    #: A PEM CA bundle every rediss:// connection verifies the server against (host name
    #: checked); empty: the system's CAs.
    redis_ca_file: str = ""

    def __post_init__(self) -> None:
        self._apply_access()

    @property
    def redis_access(self) -> RedisAccess:
        """The user, password and CA that override the URLs' (for the project's layer)."""
        return RedisAccess(self.redis_username, self.redis_password, self.redis_ca_file)

    def _apply_access(self) -> None:
        self._split("redis_url")
        ca = self.redis_ca_file
        if ca and not os.access(ca, os.R_OK):
            why = "not readable" if os.path.exists(ca) else "no such file"
            raise SettingsError(f"CHANNELS_FLEET_REDIS_CA_FILE={ca!r}: {why}")
        access = self.redis_access
        object.__setattr__(self, "redis_url", tuple(access.apply(u) for u in self.redis_url))


@dataclass(frozen=True)
class ServiceSettings(RedisSettings):
    """What the interface and the worker share: the relay's Redis, heartbeats, drain, probes."""

    #: Port of /healthz, /readyz and /metrics; 0 turns the probe server off; None (unset):
    #: see metrics_ports().
    metrics_port: int | None = None
    #: Seconds a SIGTERM drain may take before the process exits anyway.
    drain_timeout: float = 25.0
    #: Seconds between heartbeats; a peer is dead when its heartbeat is older than the TTL.
    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 3.0
    #: Most relay messages waiting in one process's channel (ChannelFull beyond).
    relay_capacity: int = 10000
    #: Largest body chunk carried in one relay message.
    chunk_size: int = 256 * 1024
    #: Re-home WebSockets of a draining (worker) or dead (interface) worker instead of 1012.
    rehome: bool = True
    #: ... except sockets that negotiated one of these subprotocols: their session (a handshake
    #: the client made once, e.g. GraphQL's connection_init, and its subscriptions) lives in
    #: the app instance and cannot move, so they close with 1012 and the client reconnects.
    rehome_except_subprotocols: tuple[str, ...] = ("graphql-transport-ws", "graphql-ws")
    #: First part of every relay key in Redis: fleets sharing a Redis need one each.
    key_prefix: str = DEFAULT_KEY_PREFIX
    #: This process's name in the fleet's status (``channels_fleet.fleet_status()``); empty:
    #: the HOSTNAME variable (the pod's name in Kubernetes), else ``<host name>-<pid>``.
    name: str = ""
    log_level: str = "INFO"
    #: The event loop: auto (uvloop where installed, else asyncio's), uvloop, asyncio
    #: (services/eventloop.py).
    loop: str = "auto"

    def __post_init__(self) -> None:
        self._apply_access()
        if self.loop not in EVENT_LOOPS:
            raise SettingsError(f"CHANNELS_FLEET_LOOP={self.loop!r}: use auto, asyncio or uvloop")
        if len(self.name) > 64 or not self.name.isprintable():
            raise SettingsError("CHANNELS_FLEET_NAME: use at most 64 printable characters")
        if not self.redis_url:
            raise SettingsError(
                "CHANNELS_FLEET_REDIS_URL is not set; expected redis://host:port "
                "(comma-separated for a cluster's startup nodes)"
            )
        for url in self.redis_url:
            if not url.startswith(("redis://", "rediss://")):
                raise SettingsError(f"CHANNELS_FLEET_REDIS_URL: {url!r} is not a redis:// URL")
        self._positive("drain_timeout", "heartbeat_interval", "relay_capacity", "chunk_size")
        check_key_prefix(self.key_prefix)
        check_metrics_port(self.metrics_port, self.public_port)
        if self.heartbeat_ttl < 2 * self.heartbeat_interval:
            raise SettingsError(
                "CHANNELS_FLEET_HEARTBEAT_TTL must be at least twice "
                "CHANNELS_FLEET_HEARTBEAT_INTERVAL"
            )

    def process_name(self) -> str:
        """How the fleet's status names this process: CHANNELS_FLEET_NAME, else HOSTNAME."""
        return self.name or os.environ.get("HOSTNAME") or f"{socket.gethostname()}-{os.getpid()}"

    def metrics_ports(self) -> Sequence[int]:
        """Where the probes may go, the first free one taken (empty: off). Unset: the public
        port + 1000 where there is one (interface), else the first free from 9100 (worker)."""
        return metrics_ports(self.metrics_port, self.public_port)

    @property
    def public_port(self) -> int | None:
        """The port clients connect to; a worker has none."""
        return None

    def keeps_session(self, subprotocol: str | None) -> bool:
        """A socket on this subprotocol keeps its session in the app: closed, never re-homed."""
        return subprotocol in self.rehome_except_subprotocols



@dataclass(frozen=True)
class WebSettings(RedisSettings):
    """Settings of ``channels-fleet web`` (gunicorn); needs no Redis."""

    wsgi_app: str = ""
    bind: str = "0.0.0.0"
    port: int = 8000
    web_workers: int = 2
    #: As ServiceSettings.metrics_port (unset: the public port + 1000).
    metrics_port: int | None = None
    #: Seconds gunicorn's workers may finish their requests after SIGTERM (graceful_timeout).
    drain_timeout: float = 25.0
    log_level: str = "INFO"
    #: Serve the project's channels_redis / in-memory CHANNEL_LAYERS with our layer (adopt.py).
    adopt_layers: bool = True
    # redis_url is optional here: the Redis an adopted in-memory layer moves to.

    def __post_init__(self) -> None:
        self._apply_access()
        if ":" not in self.wsgi_app:
            raise SettingsError(
                "CHANNELS_FLEET_WSGI_APP (or the WSGI_APP argument) must be module:attribute, "
                f"for example chat_project.wsgi:application; got {self.wsgi_app!r}"
            )
        if self.web_workers <= 0:
            raise SettingsError("CHANNELS_FLEET_WEB_WORKERS must be > 0")
        if self.drain_timeout <= 0:
            raise SettingsError("CHANNELS_FLEET_DRAIN_TIMEOUT must be > 0")
        check_metrics_port(self.metrics_port, self.port)

    def metrics_ports(self) -> Sequence[int]:
        """As ServiceSettings.metrics_ports: the one set, or the public port + 1000."""
        return metrics_ports(self.metrics_port, self.port)

    @property
    def public_port(self) -> int | None:
        return self.port


def metrics_ports(metrics_port: int | None, public_port: int | None) -> Sequence[int]:
    """The probe port(s) of a service, the first free one taken; empty: no probes."""
    if metrics_port is not None:
        return (metrics_port,) if metrics_port else ()
    if public_port is not None:
        return (public_port + METRICS_PORT_OFFSET,)
    return WORKER_METRICS_PORTS


def metrics_port_setting(metrics_port: int | None, public_port: int | None) -> str:
    """How an operator changes the probe port, for messages: the variable and, unset, how
    the port was chosen."""
    if metrics_port is not None:
        return "CHANNELS_FLEET_METRICS_PORT"
    if public_port is not None:
        return f"CHANNELS_FLEET_METRICS_PORT unset: the public port {public_port} + 1000"
    first, last = WORKER_METRICS_PORTS[0], WORKER_METRICS_PORTS[-1]
    return f"CHANNELS_FLEET_METRICS_PORT unset: the first free of {first}-{last}"


def check_metrics_port(metrics_port: int | None, public_port: int | None) -> None:
    if metrics_port is not None and not 0 <= metrics_port < 65536:
        raise SettingsError("CHANNELS_FLEET_METRICS_PORT must be 0..65535")
    if metrics_port is None and public_port is not None and (
            public_port + METRICS_PORT_OFFSET > 65535):
        raise SettingsError(
            f"CHANNELS_FLEET_METRICS_PORT is not set and the public port {public_port} + 1000 "
            "is past 65535: set CHANNELS_FLEET_METRICS_PORT (0: no probes)")


@dataclass(frozen=True)
class DevSettings(EnvSettings):
    """Settings of ``channels-fleet dev`` (the split on a developer's machine).

    ``app`` is the project's ASGI app (module:attribute), served on ``bind:port`` (local only
    by default, as ``runserver``) by one interface and ``dev_workers`` workers; ``redis_url``
    empty: a private redis-server (removed on exit). The project's .py files are looked at
    every ``reload_interval`` seconds; the services log at ``log_level`` (warnings and errors:
    a calm terminal).
    """

    app: str = ""
    redis_url: tuple[str, ...] = ()
    bind: str = "127.0.0.1"
    port: int = 8000
    dev_workers: int = 2
    reload_interval: float = 0.3
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        self._split("redis_url")
        if ":" not in self.app:
            raise SettingsError(
                "the APP argument (or CHANNELS_FLEET_APP) must be module:attribute, for example "
                f"myproject.asgi:application; got {self.app!r}")
        self._positive("dev_workers", "reload_interval")
        if not 0 < self.port < 65536:
            raise SettingsError("CHANNELS_FLEET_PORT (--port) must be 1..65535")
