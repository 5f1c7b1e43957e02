"""redis-py clients for what runs beside the layer: heartbeats, peer checks, metrics, status.

The layer has its own connections (``connection.py``); everything else that reads the relay's
Redis gets its client here, single server or cluster as the server says (``topology.py``), with
TLS, user, password and CA taken from the URL as redis-py reads them (the settings put
``CHANNELS_FLEET_REDIS_USERNAME``, ``_PASSWORD`` and ``_CA_FILE`` there: redis_access.py):

    client = sync_client(url, read_server(url, timeout=1.0).cluster, timeout=1.0)
    aclient = await redis_client(settings.redis_url)  # asyncio, detected
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.retry import Retry

from . import acl
from .topology import HELLO, Server, parse_hello

ASYNC_TIMEOUT = 5.0  # seconds, for the asyncio clients' commands


def ask_server(client: redis.Redis) -> Server:
    """What the server a blocking client is connected to is."""
    return parse_hello(client.execute_command(*HELLO))


def read_server(url: str, timeout: float = 2.0) -> Server:
    """Ask the server at ``url`` what it is (blocking)."""
    probe = sync_client(url, cluster=False, timeout=timeout)
    try:
        with acl.naming(url, "HELLO"):
            return ask_server(probe)
    finally:
        probe.close()


async def aread_server(url: str, timeout: float = ASYNC_TIMEOUT) -> Server:
    """Ask the server at ``url`` what it is."""
    probe = aioredis.Redis.from_url(url, socket_timeout=timeout)
    try:
        with acl.naming(url, "HELLO"):
            return parse_hello(await probe.execute_command(*HELLO))
    finally:
        await probe.aclose()


def seed_options(url: str) -> dict[str, Any]:
    """A redis-py cluster client's seeding for ``url``. redis-py replaces its startup nodes with
    the nodes it found, by address. Seeded by a name that always resolves to live nodes (a
    Kubernetes Service, a managed cluster's configuration endpoint), it keeps the name instead:
    once every node has a new address (a rolled StatefulSet) the found ones are all gone, and
    the client never found the cluster again (heartbeats failed for over 30 s in an upgrade
    that rolled Redis). Seeded by an address, it keeps following the nodes it found."""
    try:
        ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return {"dynamic_startup_nodes": False}
    return {}


def sync_client(url: str, cluster: bool, timeout: float = 2.0, **options: Any) -> Any:
    """A blocking redis-py client for ``url`` (RedisCluster on a cluster), short timeouts;
    ``options`` go to the client as they are."""
    cls, seeding = (RedisCluster, seed_options(url)) if cluster else (redis.Redis, {})
    # A cluster client reads the slot table and the command table now: a refusal is named.
    with acl.naming(url, "CLUSTER SLOTS"):
        return cls.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                            **seeding, **options)


async def redis_client(urls: Iterable[str]) -> Any:
    """A redis-py asyncio client for ``urls``: RedisCluster when the first node is a cluster."""
    url = list(urls)[0]
    if (await aread_server(url)).cluster:
        return AsyncRedisCluster.from_url(url, socket_timeout=ASYNC_TIMEOUT, **seed_options(url))
    return aioredis.Redis.from_url(url, socket_timeout=ASYNC_TIMEOUT)


def url_address(url: str) -> str:
    """``host:port`` of a redis:// URL."""
    kwargs = parse_url(url)
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def node_client(url: str, address: str, timeout: float, **options: Any) -> redis.Redis:
    """A blocking client of the one node at ``address`` (``host:port``), with ``url``'s user,
    password and TLS; one try per command, unless ``options`` say otherwise."""
    host, _, port = address.rpartition(":")
    kwargs: dict[str, Any] = dict(parse_url(url), host=host, port=int(port))
    # parse_url names the connection class for rediss://; the client takes ssl=True.
    if "SSL" in getattr(kwargs.pop("connection_class", None), "__name__", ""):
        kwargs["ssl"] = True
    kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout,
                  retry=Retry(NoBackoff(), 0), decode_responses=False)
    kwargs.update(options)
    return redis.Redis(**kwargs)
