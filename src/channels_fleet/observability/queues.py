"""Work queues' depth and oldest age, and every Redis node's reachability, read at scrape time.

Interface and worker processes register one ``QueueCollector`` (a prometheus_client custom
collector) next to their ``ProbeServer``; each scrape of ``/metrics`` reads Redis then:

    collector = QueueCollector.for_settings(settings).register()
    ...
    collector.close()

A read finds the topology (``HELLO``, then ``CLUSTER NODES`` on a cluster; ``layers/topology.py``
reads both), PINGs every node (``channels_fleet_redis_node_up{node}``), and for each work queue
reads ``LLEN`` and the head element of its LIST (``wire.queue_key``: ``fleet:q:{fleet.connect}``)
on the primary that serves its slot (``channels_fleet_work_queue_depth{queue}``,
``..._oldest_age_seconds{queue}``). The head is the oldest message (the layer RPUSHes and pops
LEFT); its element starts with ``<expires_at_ms>|``, so its age is
``now - (expires_at - expiry)``. A queue that cannot be read is left out of that scrape
rather than shown stale. Its commands (HELLO, CLUSTER NODES, PING, LLEN, LINDEX) are none
``@admin`` or ``@dangerous``; one the Redis user may not run is named in one warning
(docs/redis-acl.md).

It uses its own small connections (1 s timeouts, no retries), never the layer's: a metric read
must not queue behind, or slow down, the relay's traffic. Scrapes run in a thread of the probe
server, so these are plain blocking clients; PINGs go out in parallel.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Self

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError

from ..exceptions import RedisPermissionError
from ..layers import acl
from ..layers.clients import ask_server, node_client, url_address
from ..layers.topology import SLOTS, ClusterNode, parse_cluster_nodes
from ..relay import wire
from ..settings import DEFAULT_KEY_PREFIX
from .metrics import METRICS, NAMESPACE, FleetMetrics

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 1.0  # seconds for one PING or one read
DEPTH = f"{NAMESPACE}_work_queue_depth"
OLDEST_AGE = f"{NAMESPACE}_work_queue_oldest_age_seconds"


@dataclass
class QueueReading:
    queue: str
    depth: int
    oldest_age: float  # seconds; 0 for an empty queue


def oldest_age(head: bytes | None, expiry: float, now: float) -> float:
    """Age in seconds of a LIST element ``b"<expires_at_ms>|..."`` sent with ``expiry``."""
    if not head:
        return 0.0
    expires_ms = int(head.split(b"|", 1)[0])
    return max(0.0, now - (expires_ms / 1000.0 - expiry))


def queue_families(readings: Iterable[QueueReading]) -> list[GaugeMetricFamily]:
    """The work-queue metric families for ``readings`` (one sample per queue read)."""
    depth = GaugeMetricFamily(DEPTH, "Messages waiting in a shared work queue (LLEN).",
                              labels=["queue"])
    age = GaugeMetricFamily(OLDEST_AGE, "Age of the oldest message waiting in a shared work "
                            "queue.", labels=["queue"], unit="seconds")
    for reading in readings:
        depth.add_metric([reading.queue], reading.depth)
        age.add_metric([reading.queue], reading.oldest_age)
    return [depth, age]


class QueueCollector(Collector):
    """Export work-queue depth/age and Redis node reachability, read from Redis at each scrape.

    ``hosts``: the same redis:// URLs as the layer (a single server, or cluster startup nodes).
    ``expiry``: the layer's message expiry in seconds (needed to turn expires_at into an age).
    Registered, it also exports ``metrics.redis_node_up`` (which the layer sets too), fresh
    from its PINGs, in place of the gauge's own registration.
    """

    def __init__(
        self,
        hosts: Sequence[str],
        queues: Iterable[str] = (wire.CONNECT_QUEUE,),
        *,
        prefix: str = DEFAULT_KEY_PREFIX,
        expiry: float = 60,
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
        self.timeout = timeout
        self.metrics = metrics if metrics is not None else METRICS
        self.last_error: str | None = None
        self._clients: dict[str, Redis] = {}
        self._nodes_seen: set[str] = set()
        self._registry: CollectorRegistry | None = None
        self._lock = threading.Lock()  # one read at a time (scrapes may overlap)
        self._pings = ThreadPoolExecutor(8, thread_name_prefix="queue-metrics")

    @classmethod
    def for_settings(cls, settings: Any, **kwargs: Any) -> QueueCollector:
        """The collector for a service: its ``redis_url`` (``CHANNELS_FLEET_REDIS_URL``),
        the relay's key prefix (``CHANNELS_FLEET_KEY_PREFIX``) and default expiry, the queue
        ``fleet.connect``."""
        return cls(list(settings.redis_url), prefix=settings.key_prefix, **kwargs)

    # -- registration ------------------------------------------------------------------------

    def register(self, registry: CollectorRegistry | None = None) -> Self:
        """Collect on ``registry`` (prometheus-client's default if None) from now on."""
        registry = registry if registry is not None else self.metrics.registry or REGISTRY
        with contextlib.suppress(KeyError):
            registry.unregister(self.metrics.redis_node_up)  # exported by collect() instead
        registry.register(self)
        self._registry = registry
        return self

    def close(self) -> None:
        """Stop collecting (the node gauge goes back to its own registration); close clients."""
        if self._registry is not None:
            self._registry.unregister(self)
            self._registry.register(self.metrics.redis_node_up)
            self._registry = None
        self._pings.shutdown(wait=False)
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(RedisError, OSError):
                client.close()

    def describe(self) -> list[Metric]:
        """The families this collector exports (so registering reads nothing from Redis)."""
        return [*queue_families([]), *self.metrics.redis_node_up.describe()]

    def collect(self) -> Iterator[Metric]:
        """One read of Redis, as prometheus-client asks at each scrape."""
        try:
            readings = self.read()
        except Exception:  # the rest of /metrics must survive a bug here
            logger.exception("queue metrics: reading Redis failed")
            readings = []
        yield from queue_families(readings)
        yield from self.metrics.redis_node_up.collect()

    # -- one read ----------------------------------------------------------------------------

    def read(self) -> list[QueueReading]:
        """Read everything once and update the node gauge; never raises (errors are logged)."""
        with self._lock:
            try:
                nodes = self._topology()
            except RedisPermissionError as exc:
                self._fail(str(exc))  # answered, but refused: the ACL, not the nodes
                return []
            except (RedisError, OSError) as exc:
                self._fail(f"no Redis host answered: {exc!r}")
                for address in self._nodes_seen | {url_address(url) for url in self.hosts}:
                    self.metrics.redis_node_up.labels(address).set(0)
                return []
            self._ping_all(nodes)
            readings = []
            for queue in self.queues:
                try:
                    readings.append(self._read_queue(nodes, queue))
                except RedisPermissionError as exc:
                    self._fail(f"reading work queue {queue}: {exc}")
                except (RedisError, OSError, ValueError) as exc:
                    self._fail(f"reading work queue {queue}: {exc!r}")
            if len(readings) == len(self.queues):
                self.last_error = None
            return readings

    def _fail(self, message: str) -> None:
        if message != self.last_error:
            logger.warning("queue metrics: %s", message)
        self.last_error = message

    def _client(self, address: str) -> Redis:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = node_client(self.hosts[0], address, self.timeout)
        return client

    def _topology(self) -> list[ClusterNode]:
        """Nodes of the cluster (or the single server), asked of the first host that answers."""
        seeds = list(dict.fromkeys(
            [url_address(url) for url in self.hosts] + sorted(self._nodes_seen)
        ))
        last: BaseException | None = None
        for address in seeds:
            client = self._client(address)
            try:
                if not ask_server(client).cluster:
                    return [ClusterNode(address, ("master",), connected=True,
                                        slots=((0, SLOTS - 1),))]
                with acl.naming(self.hosts[0], "CLUSTER NODES"):
                    raw = client.execute_command("CLUSTER", "NODES")
            except (RedisError, OSError) as exc:
                last = exc
                continue
            tls = self.hosts[0].startswith("rediss://")
            nodes = [node for node in parse_cluster_nodes(raw, by_hostname=tls) if node.addressable]
            if nodes:
                return nodes
        raise last or RedisError("empty topology")

    def _ping_all(self, nodes: list[ClusterNode]) -> None:
        results = list(self._pings.map(self._ping, [node.address for node in nodes]))
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
                    client.close()
        self._nodes_seen = present

    def _ping(self, address: str) -> bool:
        try:
            return bool(self._client(address).ping())
        except (RedisError, OSError):
            return False

    def _read_queue(self, nodes: list[ClusterNode], queue: str) -> QueueReading:
        key = wire.queue_key(self.prefix, queue)
        slot = key_slot(key.encode())
        owners = [n for n in nodes if n.primary and not n.failed and n.serves(slot)]
        if not owners:
            raise ValueError(f"no live primary serves slot {slot} of {key}")
        pipe = self._client(owners[0].address).pipeline(transaction=False)
        pipe.llen(key)
        pipe.lindex(key, 0)
        with acl.naming(self.hosts[0], "LLEN and LINDEX", key):
            depth, head = pipe.execute()
        return QueueReading(queue, int(depth), oldest_age(head, self.expiry, time.time()))


async def _serve(hosts: list[str], port: int, prefix: str) -> None:
    import asyncio

    from .probes import ProbeServer

    collector = QueueCollector(hosts, prefix=prefix).register()

    async def readiness() -> tuple[bool, str]:
        await asyncio.to_thread(collector.read)
        error = collector.last_error
        return (error is None, error or "ok")

    probes = ProbeServer("0.0.0.0", port, readiness=readiness)
    await probes.start()
    try:
        await asyncio.Event().wait()
    finally:
        await probes.stop()
        collector.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m channels_fleet.observability.queues``: a standalone queue exporter.

    For deployments that prefer one small exporter over every process reading Redis.
    """
    import argparse
    import asyncio
    import os

    from ..settings import RedisSettings, SettingsError, check_key_prefix

    parser = argparse.ArgumentParser(prog="python -m channels_fleet.observability.queues")
    parser.add_argument("--redis-url", help="comma-separated redis:// URLs "
                        "(CHANNELS_FLEET_REDIS_URL; with CHANNELS_FLEET_REDIS_USERNAME, "
                        "_PASSWORD and _CA_FILE)")
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("CHANNELS_FLEET_METRICS_PORT", "9100")),
                        help="probes and metrics port (CHANNELS_FLEET_METRICS_PORT, 9100)")
    parser.add_argument("--key-prefix",
                        default=os.environ.get("CHANNELS_FLEET_KEY_PREFIX", DEFAULT_KEY_PREFIX),
                        help="the relay's key prefix (CHANNELS_FLEET_KEY_PREFIX, fleet)")
    args = parser.parse_args(argv)
    try:
        check_key_prefix(args.key_prefix)
        hosts = list(RedisSettings.from_env(redis_url=args.redis_url).redis_url)
    except SettingsError as exc:
        print(exc)
        return 3
    if not hosts:
        print("CHANNELS_FLEET_REDIS_URL is not set; expected redis://host:port[,...]")
        return 3
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(hosts, args.port, args.key_prefix))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
