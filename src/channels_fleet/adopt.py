"""Serve a project's own ``CHANNEL_LAYERS`` with ``RedisClusterChannelLayer``, unchanged settings.

An existing Channels project names channels_redis (or ``InMemoryChannelLayer`` left from
development) in its settings. Under the split those break: channels_redis 4.3 under redis-py 8
fails an idle ``receive`` after 5 s (channels_redis #422: consumers torn down every 5 s) and
cannot talk to a Redis Cluster; an in-memory layer cannot reach another process. The worker and
web services import the project inside :func:`adopting`: every alias backed by one of those is
re-pointed at our layer with the same meaning (hosts, prefix, expiry, capacities, encryption
keys), one log line per alias.
Our own layer and any other backend are left alone. ``CHANNELS_FLEET_ADOPT_LAYERS=off`` turns
this off.

Every process that sends on the layer must speak the same layer: a Celery worker or management
command of the project calls ``adopt_channel_layers()`` too (settings known, before
``django.setup()``).

The project's hosts at the same host and port as one of ``CHANNELS_FLEET_REDIS_URL``'s (ours
already, or adopted) connect as the fleet process does: ``CHANNELS_FLEET_REDIS_USERNAME``,
``_PASSWORD`` and ``_CA_FILE`` replace their user, password and CA, so one ``settings.py``
serves every role with its own ACL user. Hosts elsewhere are left as written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .redis_access import RedisAccess
from .settings import RedisSettings

logger = logging.getLogger("channels_fleet.adopt")
NO_ACCESS = RedisAccess()

OURS = "channels_fleet.layers.RedisClusterChannelLayer"
REDIS_BACKENDS = (
    "channels_redis.core.RedisChannelLayer",
    "channels_redis.pubsub.RedisPubSubChannelLayer",
)
IN_MEMORY = "channels.layers.InMemoryChannelLayer"

#: CONFIG options that mean the same to our layer: passed on as they are.
SAME_OPTIONS = (
    "prefix", "expiry", "group_expiry", "capacity", "channel_capacity",
    "symmetric_encryption_keys", "serializer_format",
)
#: Options with nothing to do under our layer; dropped with a log line saying why.
HARMLESS_OPTIONS = {
    "random_prefix_length": "messages need no random prefix here",
    "on_disconnect": "reconnects are handled inside the layer; the hook is not called",
    "on_reconnect": "reconnects are handled inside the layer; the hook is not called",
}
#: Per-host connection options our Redis connections use (layers/resp.py).
CONNECTION_OPTIONS = {
    "password", "username", "db", "client_name", "socket_timeout", "socket_connect_timeout",
    "ssl", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname",
    "connection_class",
}


class Unadoptable(Exception):
    """The alias cannot be served by our layer with the same meaning (the reason)."""


@dataclass
class Plan:
    """What to do with one alias: ``config`` is the new one (None: left alone)."""

    alias: str
    backend: str
    config: dict[str, Any] | None = None
    why_not: str = ""
    notes: list[str] = field(default_factory=list)


def plan_alias(alias: str, layer: dict[str, Any], redis_url: Sequence[str],
               access: RedisAccess = NO_ACCESS) -> Plan:
    """Decide how ``CHANNEL_LAYERS[alias]`` is served (pure: no I/O, no logging); ``access``
    goes to its hosts on the fleet's Redis (``redis_url``)."""
    backend = str(layer.get("BACKEND", ""))
    plan = Plan(alias, backend)
    if backend == OURS:
        return _with_access(plan, layer, redis_url, access)
    if backend not in (*REDIS_BACKENDS, IN_MEMORY):
        return plan  # a custom layer: not ours to judge
    options = dict(layer.get("CONFIG") or {})
    try:
        if backend == IN_MEMORY:
            if not redis_url:
                raise Unadoptable("CHANNELS_FLEET_REDIS_URL is not set")
            # Distinct aliases were distinct in-memory worlds: keep them apart in Redis too.
            options.setdefault("prefix", "asgi" if alias == "default" else f"asgi-{alias}")
            options["hosts"] = list(redis_url)
        else:
            options["hosts"] = [access.apply_to_host(host, redis_url)
                                for host in _hosts(options.get("hosts"), plan.notes)]
        config = {"hosts": options.pop("hosts")}
        for name in SAME_OPTIONS:
            if name in options:
                config[name] = options.pop(name)
        for name in sorted(set(options) & set(HARMLESS_OPTIONS)):
            options.pop(name)
            plan.notes.append(f"option {name!r} dropped ({HARMLESS_OPTIONS[name]})")
        if options:
            raise Unadoptable(f"unknown CONFIG option(s) {', '.join(sorted(options))}")
    except (Unadoptable, TypeError, ValueError) as exc:  # e.g. a port that is not a number
        plan.why_not = str(exc)
        return plan
    new = {key: value for key, value in layer.items() if key not in ("BACKEND", "CONFIG")}
    plan.config = {**new, "BACKEND": OURS, "CONFIG": config}
    return plan


def _with_access(plan: Plan, layer: dict[str, Any], redis_url: Sequence[str],
                 access: RedisAccess) -> Plan:
    """Our layer already: only its hosts on the fleet's Redis change, to ``access``."""
    config = dict(layer.get("CONFIG") or {})
    hosts = config.get("hosts")
    if not access or not isinstance(hosts, (list, tuple)):
        return plan
    new = [access.apply_to_host(host, redis_url) for host in hosts]
    if new != list(hosts):
        plan.config = {**layer, "CONFIG": {**config, "hosts": new}}
    return plan


def _hosts(hosts: Any, notes: list[str]) -> list[Any]:
    """channels_redis ``hosts`` (tuples, URLs, dicts) as our layer's URLs / address dicts."""
    if not hosts:
        return ["redis://localhost:6379"]  # channels_redis's default, kept
    if isinstance(hosts, (str, bytes)):
        raise Unadoptable("'hosts' is a string, not a list (channels_redis refuses it too)")
    hosts = list(hosts)
    if len(hosts) > 1:
        # channels_redis shards over independent servers; ours takes one Redis or one cluster.
        raise Unadoptable(
            f"'hosts' lists {len(hosts)} servers, which channels_redis shards across; "
            "RedisClusterChannelLayer needs one Redis or one Redis Cluster")
    return [_host(entry, notes) for entry in hosts]


def _host(entry: Any, notes: list[str]) -> Any:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, (tuple, list)) and len(entry) >= 2:
        return _url(str(entry[0]), int(entry[1]))
    if not isinstance(entry, dict):
        raise Unadoptable(f"'hosts' entry {entry!r} is not a URL, (host, port) or dict")
    extra = dict(entry)
    if "sentinels" in extra or "master_name" in extra:
        raise Unadoptable("Redis Sentinel hosts are not supported by RedisClusterChannelLayer")
    if "address" in extra:
        address = str(extra.pop("address"))
    else:
        address = _url(str(extra.pop("host", "localhost")), int(extra.pop("port", 6379)))
    unused = sorted(set(extra) - CONNECTION_OPTIONS)
    for name in unused:
        extra.pop(name)
    if unused:
        notes.append(f"connection option(s) {', '.join(unused)} not used (dropped)")
    return {"address": address, **extra} if extra else address


def _url(host: str, port: int) -> str:
    return f"redis://[{host}]:{port}" if ":" in host else f"redis://{host}:{port}"


def redact(url: str) -> str:
    """``url`` without its password, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def describe(config: dict[str, Any]) -> str:
    hosts = [redact(h if isinstance(h, str) else h["address"]) for h in config["hosts"]]
    return f"hosts {', '.join(hosts)}, prefix {config.get('prefix', 'asgi')!r}"


def adopt_channel_layers(redis_url: Sequence[str] | None = None,
                         access: RedisAccess | None = None) -> list[str]:
    """Re-point the project's channels_redis / in-memory aliases at our layer.

    Needs configured Django settings. ``redis_url`` serves in-memory aliases; ``access`` goes
    to the hosts on that Redis (default for both: ``RedisSettings.from_env()``, i.e.
    ``CHANNELS_FLEET_REDIS_URL`` and ``CHANNELS_FLEET_REDIS_USERNAME``, ``_PASSWORD``,
    ``_CA_FILE``). Returns the aliases adopted or given the fleet's access.
    """
    from channels.layers import channel_layers
    from django.conf import settings

    if redis_url is None or access is None:
        fleet = RedisSettings.from_env()
        redis_url = fleet.redis_url if redis_url is None else redis_url
        access = fleet.redis_access if access is None else access
    layers = dict(getattr(settings, "CHANNEL_LAYERS", None) or {})
    adopted = []
    for alias, layer in layers.items():
        plan = plan_alias(alias, layer, redis_url, access)
        if plan.why_not:
            logger.warning("CHANNEL_LAYERS[%r]: kept %s: %s", alias, plan.backend, plan.why_not)
            continue
        if plan.config is None:
            continue
        for note in plan.notes:
            logger.info("CHANNEL_LAYERS[%r]: %s", alias, note)
        if plan.backend == OURS:
            logger.info("CHANNEL_LAYERS[%r]: connects with CHANNELS_FLEET_REDIS_USERNAME, "
                        "_PASSWORD and _CA_FILE (%s)", alias, describe(plan.config["CONFIG"]))
        else:
            logger.info("CHANNEL_LAYERS[%r]: %s replaced by %s (%s)", alias, plan.backend,
                        OURS, describe(plan.config["CONFIG"]))
        layers[alias] = plan.config
        adopted.append(alias)
    if adopted:
        settings.CHANNEL_LAYERS = layers
        # channels caches one layer instance per alias; drop any built from the old config.
        for alias in adopted:
            if channel_layers.backends.pop(alias, None) is not None:
                logger.warning(
                    "CHANNEL_LAYERS[%r]: a layer was built before adoption; code that kept it "
                    "still uses the old backend (set DJANGO_SETTINGS_MODULE in the environment)",
                    alias)
    return adopted


@contextmanager
def adopting(enabled: bool, redis_url: Sequence[str] | None = None,
             access: RedisAccess | None = None) -> Iterator[None]:
    """Adopt around importing (and setting up) the project, once Django is configured,
    whichever way it is.

    ``DJANGO_SETTINGS_MODULE`` known: before anything, so code run by ``django.setup()`` (an
    ``AppConfig.ready()`` keeping ``get_channel_layer()``) already gets our layer. Otherwise
    the project's module configures Django itself, as Daphne and gunicorn allow: it names its
    settings (``os.environ.setdefault``) or calls ``settings.configure(...)``, then
    ``django.setup()`` (directly or through ``get_asgi_application()``): the layers are adopted
    as that ``django.setup()`` begins, or just after the import if it never calls it.
    """
    import django
    from django.conf import settings

    adopted = False

    def adopt_once() -> None:
        nonlocal adopted
        if enabled and not adopted and (
                settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE")):
            adopted = True
            adopt_channel_layers(redis_url, access)

    original = django.setup

    def setup(*args: Any, **kwargs: Any) -> None:
        adopt_once()  # configured by now, whichever way; the apps are not populated yet
        original(*args, **kwargs)

    adopt_once()
    django.setup = setup
    try:
        yield
    finally:
        django.setup = original
    adopt_once()
