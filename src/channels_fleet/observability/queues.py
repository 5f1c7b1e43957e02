"""Read the shared work queues' depth and oldest age, and every Redis node's reachability.

Worker and interface processes run one ``QueueCollector`` next to their ``ProbeServer``:

    collector = QueueCollector(settings.redis_url, queues=["fleet.connect"], expiry=60)
    await collector.start()       # refreshes every 5 s until stop()
    ...
    await collector.stop()

Each round it finds the topology (``INFO cluster``, then ``CLUSTER NODES`` on a cluster), PINGs
every node (``channels_fleet_redis_node_up{node}``), and for each work queue reads ``LLEN`` and
the head element of its LIST ``<prefix>:q:{<queue>}`` on the primary that serves its slot
(``channels_fleet_work_queue_depth{queue}``, ``..._oldest_age_seconds{queue}``). The head is
the oldest message (the layer RPUSHes and pops LEFT); its element starts with
``<expires_at_ms>|``, so its age is ``now - (expires_at - expiry)``.

It uses its own small connections (1 s timeouts, no retries), never the layer's: a metric read
must not queue behind, or slow down, the relay's traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError
from redis.retry import Retry

from .metrics import METRICS, WORK_QUEUE, FleetMetrics

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0  # seconds between reads; Prometheus scrapes every 15-30 s
DEFAULT_TIMEOUT = 1.0  # seconds for one PING or one read


def queue_key(prefix: str, queue: str) -> str:
    """The LIST of a normal channel, as the layer names it (pinned: ``fleet:q:{fleet.connect}``)."""
    return f"{prefix}:q:{{{queue}}}"


@dataclass
class Node:
    """One Redis server as seen in the topology."""

    address: str  # host:port, also the metric label
    primary: bool = True
    failed: bool = False  # flagged fail/pfail by the cluster itself
    slots: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class QueueReading:
    queue: str
    depth: int
    oldest_age: float  # seconds; 0 for an empty queue


def parse_cluster_nodes(text: str) -> list[Node]:
    """Parse ``CLUSTER NODES`` output into nodes (skipping ones without an address)."""
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@", 1)[0]
        flags = set(parts[2].split(","))
        host, _, port = address.rpartition(":")
        if not host or port in ("", "0") or flags & {"noaddr", "handshake"}:
            continue
        slots = []
        for spec in parts[8:]:
            if spec.startswith("["):  # a slot being migrated: "[slot->-node]"
                continue
            start, _, end = spec.partition("-")
            slots.append((int(start), int(end or start)))
        nodes.append(Node(address, "master" in flags, bool(flags & {"fail", "fail?"}), slots))
    return nodes


def oldest_age(head: bytes | None, expiry: float, now: float) -> float:
    """Age in seconds of a LIST element ``b"<expires_at_ms>|..."`` sent with ``expiry``."""
    if not head:
        return 0.0
    expires_ms = int(head.split(b"|", 1)[0])
    return max(0.0, now - (expires_ms / 1000.0 - expiry))


class QueueCollector:
    """Periodically export work-queue depth/age and Redis node reachability.

    ``hosts``: the same redis:// URLs as the layer (a single server, or cluster startup nodes).
    ``expiry``: the layer's message expiry in seconds (needed to turn expires_at into an age).
    """

    def __init__(
        self,
        hosts: Sequence[str],
        queues: Iterable[str] = (WORK_QUEUE,),
        *,
        prefix: str = "fleet",
        expiry: float = 60,
        interval: float = DEFAULT_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        metrics: FleetMetrics | None = None,
    ) -> None:
        if not hosts:
            raise ValueError(
                "QueueCollector needs at least one redis:// URL (CHANNELS_FLEET_REDIS_URL)"
            )
        self.hosts = list(hosts)
        self.queues = list(queues)
        self.prefix = prefix
        self.expiry = expiry
        self.interval = interval
        self.timeout = timeout
        self.metrics = metrics if metrics is not None else METRICS
        self.last_error: str | None = None
        self._base = parse_url(self.hosts[0])
        self._clients: dict[str, Redis] = {}
        self._nodes_seen: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_settings(cls, settings: Any, **kwargs: Any) -> QueueCollector:
        """The collector for a service: its ``redis_url`` (``CHANNELS_FLEET_REDIS_URL``),
        the relay's key prefix (``CHANNELS_FLEET_KEY_PREFIX``) and default expiry, the queue
        ``fleet.connect``."""
        return cls(list(settings.redis_url), prefix=settings.key_prefix, **kwargs)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Collect once now (so the first scrape has values), then every ``interval``."""
        await self.collect_once()
        self._task = asyncio.create_task(self._loop(), name="queue-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.collect_once()

    # -- one round ---------------------------------------------------------------------------

    async def collect_once(self) -> list[QueueReading]:
        """Read everything once and update the gauges; never raises (errors are logged)."""
        try:
            nodes = await self._topology()
        except (RedisError, OSError, TimeoutError) as exc:
            self._fail(f"no Redis host answered: {exc!r}")
            for address in self._nodes_seen:
                self.metrics.redis_node_up.labels(address).set(0)
            self._drop_queue_series()
            return []
        await self._ping_all(nodes)
        readings = []
        for queue in self.queues:
            try:
                reading = await self._read_queue(nodes, queue)
            except (RedisError, OSError, TimeoutError, ValueError) as exc:
                self._fail(f"reading work queue {queue}: {exc!r}")
                self._drop_queue_series([queue])
                continue
            self.metrics.work_queue_depth.labels(queue).set(reading.depth)
            self.metrics.work_queue_oldest_age.labels(queue).set(reading.oldest_age)
            readings.append(reading)
        if len(readings) == len(self.queues):
            self.last_error = None
        return readings

    def _fail(self, message: str) -> None:
        if message != self.last_error:
            logger.warning("queue metrics: %s", message)
        self.last_error = message

    def _drop_queue_series(self, queues: Iterable[str] | None = None) -> None:
        # A value we could not read is absent, not stale: dashboards show a gap, not a lie.
        for queue in queues if queues is not None else self.queues:
            for gauge in (self.metrics.work_queue_depth, self.metrics.work_queue_oldest_age):
                with contextlib.suppress(KeyError):
                    gauge.remove(queue)

    def _client(self, address: str) -> Redis:
        client = self._clients.get(address)
        if client is None:
            host, _, port = address.rpartition(":")
            kwargs: dict[str, Any] = dict(self._base, host=host, port=int(port))
            # parse_url names redis-py's sync SSLConnection for rediss://; asyncio takes ssl=True.
            if "SSL" in getattr(kwargs.pop("connection_class", None), "__name__", ""):
                kwargs["ssl"] = True
            kwargs.update(
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
            )
            client = self._clients[address] = Redis(**kwargs)
        return client

    async def _topology(self) -> list[Node]:
        """Nodes of the cluster (or the single server), asked of the first host that answers."""
        seeds = list(dict.fromkeys(
            [_address(url) for url in self.hosts] + sorted(self._nodes_seen)
        ))
        last: BaseException | None = None
        for address in seeds:
            client = self._client(address)
            try:
                info = await asyncio.wait_for(client.info("cluster"), self.timeout)
                if not info.get("cluster_enabled"):
                    return [Node(address, slots=[(0, 16383)])]
                raw = await asyncio.wait_for(client.execute_command("CLUSTER", "NODES"),
                                             self.timeout)
            except (RedisError, OSError, TimeoutError) as exc:
                last = exc
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            nodes = parse_cluster_nodes(text)
            if nodes:
                return nodes
        raise last or RedisError("empty topology")

    async def _ping_all(self, nodes: list[Node]) -> None:
        results = await asyncio.gather(*(self._ping(node.address) for node in nodes))
        present = set()
        for node, up in zip(nodes, results, strict=True):
            self.metrics.redis_node_up.labels(node.address).set(1 if up else 0)
            present.add(node.address)
        # A node the cluster forgot is no longer a series (keeps the label set bounded).
        for gone in self._nodes_seen - present:
            with contextlib.suppress(KeyError):
                self.metrics.redis_node_up.remove(gone)
            client = self._clients.pop(gone, None)
            if client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
        self._nodes_seen = present

    async def _ping(self, address: str) -> bool:
        try:
            return bool(await asyncio.wait_for(self._client(address).ping(), self.timeout))
        except (RedisError, OSError, TimeoutError):
            return False

    async def _read_queue(self, nodes: list[Node], queue: str) -> QueueReading:
        key = queue_key(self.prefix, queue)
        slot = key_slot(key.encode())
        owners = [
            n for n in nodes
            if n.primary and not n.failed and any(a <= slot <= b for a, b in n.slots)
        ]
        if not owners:
            raise ValueError(f"no live primary serves slot {slot} of {key}")
        pipe = self._client(owners[0].address).pipeline(transaction=False)
        pipe.llen(key)
        pipe.lindex(key, 0)
        depth, head = await asyncio.wait_for(pipe.execute(), self.timeout)
        return QueueReading(queue, int(depth), oldest_age(head, self.expiry, time.time()))


def _address(url: str) -> str:
    kwargs = parse_url(url)
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


async def _serve(hosts: list[str], port: int, interval: float, prefix: str) -> None:
    from .probes import ProbeServer

    collector = QueueCollector(hosts, interval=interval, prefix=prefix)
    await collector.start()

    async def readiness() -> tuple[bool, str]:
        error = collector.last_error
        return (error is None, error or "ok")

    probes = ProbeServer("0.0.0.0", port, readiness=readiness)
    await probes.start()
    try:
        await asyncio.Event().wait()
    finally:
        await probes.stop()
        await collector.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m channels_fleet.observability.queues``: a standalone queue exporter.

    For deployments that prefer one small exporter over every process polling Redis.
    """
    import argparse
    import os

    parser = argparse.ArgumentParser(prog="python -m channels_fleet.observability.queues")
    parser.add_argument("--redis-url", default=os.environ.get("CHANNELS_FLEET_REDIS_URL", ""),
                        help="comma-separated redis:// URLs (CHANNELS_FLEET_REDIS_URL)")
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("CHANNELS_FLEET_METRICS_PORT", "9100")),
                        help="probes and metrics port (CHANNELS_FLEET_METRICS_PORT, 9100)")
    parser.add_argument("--key-prefix",
                        default=os.environ.get("CHANNELS_FLEET_KEY_PREFIX", "fleet"),
                        help="the relay's key prefix (CHANNELS_FLEET_KEY_PREFIX, fleet)")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    args = parser.parse_args(argv)
    from ..settings import SettingsError, check_key_prefix

    try:
        check_key_prefix(args.key_prefix)
    except SettingsError as exc:
        print(exc)
        return 3
    hosts = [url for url in args.redis_url.split(",") if url]
    if not hosts:
        print("CHANNELS_FLEET_REDIS_URL is not set; expected redis://host:port[,...]")
        return 3
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(hosts, args.port, args.interval, args.key_prefix))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
