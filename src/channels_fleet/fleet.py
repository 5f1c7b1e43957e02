"""The fleet's status: every live interface and worker, read from their heartbeats.

Each process's heartbeat key (``relay/heartbeat.py``) holds a small JSON status, refreshed
every second from the counts kept beside the process's metrics (``observability/status.py``).
This reads them all, plus the work queue's depth and oldest age, in four Redis commands:

    from channels_fleet import fleet_status

    fleet = fleet_status()  # CHANNELS_FLEET_REDIS_URL and CHANNELS_FLEET_KEY_PREFIX
    for proc in fleet["processes"]:
        print(proc["kind"], proc["name"], proc["sockets"])
    # interface i1 3 / interface i2 2 / worker w1 2 / worker w2 3
    fleet["queue"]  # {"name": "fleet.connect", "depth": 0, "oldest_age": 0.0}

A process is ``{"channel", "name", "kind", "pid", "age", "sockets", "draining", "closes",
"rehomes", "recent", ...}`` (see :class:`~channels_fleet.observability.status.StatusReport`;
``age``: seconds since its last beat). A page that reads it again and again keeps one
:class:`FleetStatus` (its connection) and calls ``read()`` from a thread:

    reader = FleetStatus()
    fleet = await asyncio.to_thread(reader.read)

The heartbeat keys share one cluster slot (``{hb}``): they are listed with
``CLUSTER GETKEYSINSLOT`` on a cluster, with ``SCAN`` on a single Redis. None of its commands
is ``@admin`` or ``@dangerous``; one the Redis user may not run raises
:class:`~channels_fleet.exceptions.RedisPermissionError` naming it (docs/redis-acl.md).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from redis.cluster import RedisCluster
from redis.crc import key_slot

from .layers import acl
from .layers.clients import read_server, sync_client
from .observability.queues import oldest_age
from .relay import wire
from .settings import DEFAULT_KEY_PREFIX, RedisSettings, SettingsError, check_key_prefix

#: The layer's message expiry (``RedisClusterChannelLayer(expiry=60)``): a queued envelope's
#: age is its expires_at minus this.
LAYER_EXPIRY = 60.0
MAX_KEYS = 10_000  # heartbeats and tombstones listed at most


class FleetStatus:
    """Reads the fleet's status from the relay's Redis; keeps its connection between reads.

    ``redis_url`` and ``prefix`` default to ``CHANNELS_FLEET_REDIS_URL`` and
    ``CHANNELS_FLEET_KEY_PREFIX``; the URLs connect with ``CHANNELS_FLEET_REDIS_USERNAME``,
    ``_PASSWORD`` and ``_CA_FILE`` where set (``RedisSettings``), as the fleet's processes do.
    Thread-safe; ``read()`` blocks (short timeouts) and raises
    redis-py's errors when Redis cannot be read.
    """

    def __init__(self, redis_url: Iterable[str] | str | None = None, *,
                 prefix: str | None = None, timeout: float = 1.0) -> None:
        if redis_url is not None and not isinstance(redis_url, str):
            redis_url = tuple(redis_url)
        urls = RedisSettings.from_env(redis_url=redis_url).redis_url
        if not urls:
            raise SettingsError("CHANNELS_FLEET_REDIS_URL is not set; expected redis://host:port")
        self.url = urls[0]
        self.prefix = prefix or os.environ.get("CHANNELS_FLEET_KEY_PREFIX") or DEFAULT_KEY_PREFIX
        check_key_prefix(self.prefix)
        self.timeout = timeout
        self._beats = wire.heartbeat_key("", self.prefix)  # every heartbeat key starts so
        self._client: Any = None
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any]:
        """``{"processes": [...], "queue": {...}, "read_at": <unix time>}``; interfaces first,
        then workers, each by name."""
        with self._lock:
            try:
                return self._read(self._connect())
            except Exception:
                self._close()  # a failover may have moved things: connect afresh next time
                raise

    def close(self) -> None:
        with self._lock:
            self._close()

    def _connect(self) -> Any:
        if self._client is None:
            cluster = read_server(self.url, timeout=self.timeout).cluster
            self._client = sync_client(self.url, cluster, timeout=self.timeout)
        return self._client

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _read(self, client: Any) -> dict[str, Any]:
        keys = self._heartbeat_keys(client)
        with acl.naming(self.url, "MGET", self._beats + "*"):
            values = client.mget(keys) if keys else []
        queue = wire.queue_key(self.prefix)
        with acl.naming(self.url, "LLEN", queue):
            depth = client.llen(queue)
        with acl.naming(self.url, "LINDEX", queue):
            head = client.lindex(queue, 0)
        now = time.time()
        processes = [
            process_status(key[len(self._beats):], value, now)
            for key, value in zip(keys, values, strict=True) if value is not None
        ]
        processes.sort(key=lambda p: (p["kind"] != "interface", p["name"], p["channel"]))
        return {
            "processes": processes,
            "queue": {"name": wire.CONNECT_QUEUE, "depth": int(depth),
                      "oldest_age": round(oldest_age(head, LAYER_EXPIRY, now), 3)},
            "read_at": now,
        }

    def _heartbeat_keys(self, client: Any) -> list[str]:
        if isinstance(client, RedisCluster):
            slot = key_slot(self._beats.encode())
            with acl.naming(self.url, "CLUSTER GETKEYSINSLOT"):
                found = client.cluster_get_keys_in_slot(slot, MAX_KEYS)
        else:
            with acl.naming(self.url, "SCAN"):
                found = list(client.scan_iter(match=self._beats + "*", count=1000))
        keys = (k.decode() if isinstance(k, bytes) else k for k in found)
        return sorted(k for k in keys if k.startswith(self._beats))


def process_status(channel: str, value: bytes | str, now: float) -> dict[str, Any]:
    """One heartbeat's status; a bare timestamp (a process of an older release) is named
    after its channel."""
    try:
        report = json.loads(value)
    except ValueError:
        report = {}
    if isinstance(report, int | float):
        report = {"ts": report}
    elif not isinstance(report, dict):
        report = {}
    kind = "interface" if channel.startswith(wire.INTERFACE_CHANNELS) else "worker"
    status: dict[str, Any] = {"name": channel, "kind": kind, "sockets": None, **report}
    status["channel"] = channel
    ts = status.pop("ts", None)
    status["age"] = round(max(0.0, now - ts), 3) if isinstance(ts, int | float) else None
    return status


def fleet_status(redis_url: Iterable[str] | str | None = None, *,
                 prefix: str | None = None) -> dict[str, Any]:
    """One read of the fleet's status (see the module's docstring); blocks briefly."""
    reader = FleetStatus(redis_url, prefix=prefix)
    try:
        return reader.read()
    finally:
        reader.close()
