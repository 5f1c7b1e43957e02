"""Heartbeats: every interface and worker proves it is alive; peers check each other.

Each process keeps ``fleet:hb:{hb}:<its relay channel>`` (``fleet``: the relay's key prefix)
alive with ``SET key <ts> PX ttl``: ``NX`` once at start, ``XX`` on every beat. A beat that
finds the key gone means the process was cut off long enough for its peers to declare it dead
(SIGSTOP, a network partition): its connections are no longer its own, so ``on_lost`` runs (on
the event loop) and the process registers afresh. All heartbeat keys share the hash tag
``{hb}``, so one MGET checks any number of peers on a Redis Cluster too.

The beat runs in its own thread with its own (sync) connection: a worker whose event loop is
busy starting thousands of consumers is slow, not dead, and must not be declared dead for it.
A killed or stopped process stops beating either way. Work that holds the whole process for
longer than the TTL (a full garbage collection over millions of objects holds the GIL, so
this thread cannot beat either) runs as the heartbeat's :class:`Pause`: announced by a beat
whose TTL covers it, then run on this thread.

The key's value is a small JSON status (``{"ts": ..., "name": "w1", "kind": "worker",
"sockets": 12, ...}``: what ``status()`` returns, read from the process's own metrics by the
services) that :func:`channels_fleet.fleet.fleet_status` reads for every live process. Liveness
only asks whether the key exists; building the value takes about 0.1 ms a beat.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from .polling import stop_requested
from .room import WorkerRoom
from .wire import INTERFACE_CHANNELS, heartbeat_key, tombstone_key, workers_key

logger = logging.getLogger(__name__)

#: Tombstones are set (atomically, while the heartbeat is missing) by the peer that declares a
#: process dead, and kept this long.
TOMBSTONE_MS = 24 * 3600 * 1000

# A heartbeat can also expire because Redis itself was away (a master failing over takes
# longer than the TTL): that must not read as every process dying. So a peer is declared dead
# only by a script that finds its heartbeat still missing and leaves a tombstone, and a process
# whose key expired abandons its connections only if it finds that tombstone. Both scripts
# touch one slot ({hb}), so a re-registration and a declaration are ordered.
_DECLARE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  return 1
end
return 0
"""
_REVIVE = """
local dead = redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return dead
"""


# When this process last failed to reach Redis (monotonic; its heartbeat thread or a peer
# check): a command that failed, took longer than its interval, or found our own key lapsed.
# A process that could not reach Redis cannot judge its peers: for this long after it (TTL +
# beat interval) they may still be re-registering.
_trouble = {"at": 0.0, "grace": 0.0}


def _redis_trouble() -> None:
    _trouble["at"] = time.monotonic()


async def _is_cluster(url: str) -> bool:
    probe = aioredis.Redis.from_url(url, socket_timeout=5)
    try:
        info = await probe.info("cluster")
    finally:
        await probe.aclose()
    return bool(info.get("cluster_enabled"))


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
    return cls.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                        **seeding, **options)


#: How long a beat waits for Redis before it gives up and tries again. A master that handed
#: its slots over and then went (a drained node: its address vanishes, so requests to it hang
#: rather than fail) must be found again well inside the TTL: one short wait, a slot-map
#: refresh (redis-py asks the failed node last), one retry without back-off, and the beat loop
#: tries again.
BEAT_TIMEOUT = 0.5
#: After a failed beat, the next one starts this soon instead of an interval later (doubling
#: up to the interval while Redis stays away).
BEAT_RETRY = 0.1


async def redis_client(urls: Iterable[str]) -> Any:
    """A redis-py asyncio client for ``urls``: RedisCluster when the first node is a cluster."""
    url = list(urls)[0]
    if await _is_cluster(url):
        return AsyncRedisCluster.from_url(url, socket_timeout=5, **seed_options(url))
    return aioredis.Redis.from_url(url, socket_timeout=5)


#: What a process reports in its heartbeat, called once per beat on the heartbeat's thread.
Status = Callable[[], Mapping[str, Any]]


class Pause(Protocol):
    """Work that stalls the whole process, run by the heartbeat thread when ``due()``, after a
    beat that keeps the key alive ``budget`` seconds longer than usual (so no peer declares
    the process dead meanwhile)."""

    budget: float

    def due(self) -> bool: ...

    def run(self) -> None: ...


class Heartbeat:
    """Keeps this process's heartbeat key alive from a thread of its own.

    The value is ``{"ts": <unix time>, **status()}`` as JSON (``status`` must be cheap and
    thread-safe: prometheus_client's values are). With a ``registry`` (workers:
    ``wire.workers_key``) each beat also scores this channel there with its key's expiry.
    """

    def __init__(
        self,
        urls: Iterable[str],
        channel: str,
        *,
        interval: float = 1.0,
        ttl: float = 3.0,
        on_lost: Callable[[], None] | None = None,
        prefix: str,
        status: Status | None = None,
        registry: str | None = None,
        pause: Pause | None = None,
    ) -> None:
        self.urls = list(urls)
        self.pause = pause
        self.registry = registry
        self.channel = channel
        self.key = heartbeat_key(channel, prefix)
        self.tombstone = tombstone_key(channel, prefix)
        self.interval = interval
        self.ttl_ms = int(ttl * 1000)
        _trouble["grace"] = max(_trouble["grace"], ttl + interval)
        self.on_lost = on_lost
        self.status = status
        self._status_failed = False
        self.last_beat = 0.0
        self._client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def age(self) -> float:
        """Seconds since the last successful beat (what readiness and metrics report)."""
        return time.monotonic() - self.last_beat if self.last_beat else float("inf")

    @property
    def fresh(self) -> bool:
        return self.age * 1000 < self.ttl_ms

    @property
    def overdue(self) -> bool:
        """Whether a beat is late (one failed or hangs): Redis is away from this process."""
        return self.age > 2 * self.interval

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = sync_client(self.urls[0], await _is_cluster(self.urls[0]), BEAT_TIMEOUT,
                                   retry=Retry(NoBackoff(), 1))
        await asyncio.to_thread(self._register)
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {self.channel}",
                                        daemon=True)
        self._thread.start()

    async def stop(self, *, remove: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        if self._client is None:
            return
        try:
            if remove:
                await asyncio.to_thread(self._client.delete, self.key)
                if self.registry is not None:
                    await asyncio.to_thread(self._client.zrem, self.registry, self.channel)
        except Exception:
            logger.warning("could not remove heartbeat %s", self.key)
        finally:
            self._client.close()

    def value(self) -> str:
        """What the key holds: the time and this process's status, as JSON."""
        report: dict[str, Any] = {}
        if self.status is not None:
            try:
                report = dict(self.status())
            except Exception as exc:  # a broken report must never stop the beat
                if not self._status_failed:
                    logger.warning("heartbeat %s: status report failed: %r", self.key, exc)
                self._status_failed = True
        return json.dumps({**report, "ts": round(time.time(), 3)}, separators=(",", ":"))

    def _register(self) -> None:
        self._client.set(self.key, self.value(), px=self.ttl_ms, nx=True)
        if self.registry is not None:
            # Entries of processes killed without a word expire here.
            self._client.zremrangebyscore(self.registry, "-inf", int(time.time() * 1000))
        self._enlist()
        self.last_beat = time.monotonic()

    def _enlist(self, ttl_ms: int | None = None) -> None:
        if self.registry is not None:
            expires = int(time.time() * 1000) + (ttl_ms or self.ttl_ms)
            self._client.zadd(self.registry, {self.channel: expires})

    def beat(self) -> None:
        """Refresh the key; if it had expired, we were declared dead: hand over and re-register."""
        value = self.value()
        refreshed = self._client.set(self.key, value, px=self.ttl_ms, xx=True)
        if not refreshed:
            # Our key lapsed: Redis was away from us (or we stalled) for longer than the TTL,
            # so our peers' keys may have lapsed with it; they get their grace to beat again.
            _redis_trouble()
            declared = self._client.eval(_REVIVE, 2, self.key, self.tombstone,
                                         value, self.ttl_ms)
            if declared:
                logger.error(
                    "heartbeat %s had expired and peers declared this process dead (stalled or "
                    "cut off); its connections are no longer theirs", self.key,
                )
                if self.on_lost is not None and self._loop is not None:
                    self._loop.call_soon_threadsafe(self.on_lost)
            else:
                logger.warning("heartbeat %s had expired (Redis unreachable for longer than "
                               "the TTL?); nobody declared this process dead: re-registered",
                               self.key)
        self._enlist()
        self.last_beat = time.monotonic()

    def run_pause(self, pause: Pause) -> bool:
        """Run ``pause`` after a beat whose TTL covers its budget; False (not run) if that
        beat failed or found the key gone (the next ordinary beat deals with that first)."""
        ttl_ms = self.ttl_ms + int(pause.budget * 1000)
        try:
            if not self._client.set(self.key, self.value(), px=ttl_ms, xx=True):
                return False
            self._enlist(ttl_ms)
        except Exception as exc:
            logger.warning("heartbeat %s: could not announce a pause: %s", self.key, exc)
            return False
        started = time.monotonic()
        pause.run()
        took = time.monotonic() - started
        if took > pause.budget / 2:
            logger.warning("heartbeat %s: a pause took %.1f s of its %.0f s budget", self.key,
                           took, pause.budget)
        return True

    def _run(self) -> None:
        wait = self.interval
        failing_since: float | None = None
        while not self._stop.wait(wait):
            started = time.monotonic()
            try:
                if self.pause is not None and self.pause.due() and self.run_pause(self.pause):
                    started = time.monotonic()  # beat at once: the key's TTL back to normal
                self.beat()
            except Exception as exc:
                _redis_trouble()
                # The key expires at the TTL whatever happens: try again soon, backing off.
                if failing_since is None:
                    failing_since = started
                    wait = BEAT_RETRY
                    logger.warning("heartbeat %s failed: %s; retrying", self.key, exc)
                else:
                    wait = min(2 * wait, self.interval)
                continue
            wait = self.interval
            if failing_since is not None:
                logger.warning("heartbeat %s beating again after %.1f s", self.key,
                               time.monotonic() - failing_since)
                failing_since = None
            if time.monotonic() - started > self.interval:
                _redis_trouble()  # the client retried through a failover before it got through


@dataclass
class PeerWatch:
    """Every ``interval`` seconds, report which peers of this process's connections are dead."""

    client: Any
    peers: Callable[[], Iterable[str]]
    on_dead: Callable[[set[str]], None]
    interval: float = 1.0
    #: After this process could not reach Redis, how long before a missing heartbeat counts
    #: (peers need that long to beat again): the heartbeat's TTL + interval.
    grace: float | None = None
    #: Whether this process is cut off from Redis now (its own beat is late): its peers may be
    #: too, so it judges nobody until it has been back for ``grace``.
    cut_off: Callable[[], bool] = lambda: False
    prefix: str = field(kw_only=True)
    _healthy_since: float | None = field(default=None, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="peer-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def dead(self, channels: Iterable[str]) -> set[str]:
        """Those of ``channels`` whose process has no live heartbeat (declared dead now)."""
        return await self.declare(await self.missing(channels))

    async def missing(self, channels: Iterable[str]) -> list[str]:
        """Those of ``channels`` whose heartbeat key is absent."""
        names = list(dict.fromkeys(channels))
        if not names:
            return []
        values = await self.client.mget([heartbeat_key(n, self.prefix) for n in names])
        return [name for name, value in zip(names, values, strict=True) if value is None]

    async def declare(self, missing: Iterable[str]) -> set[str]:
        """Declare dead those still without a heartbeat (tombstone); returns them."""
        dead = set()
        for name in missing:
            if await self.client.eval(_DECLARE, 2, heartbeat_key(name, self.prefix),
                                      tombstone_key(name, self.prefix), TOMBSTONE_MS):
                dead.add(name)
        return dead

    async def _loop(self) -> None:
        self._healthy_since = time.monotonic()
        while not stop_requested():
            await asyncio.sleep(self.interval)
            if self.cut_off():
                _redis_trouble()
                continue
            try:
                asked = time.monotonic()
                missing = await self.missing(self.peers())
                if time.monotonic() - asked > self.interval:
                    # The client retried until Redis answered (a failover): the peers could
                    # not beat meanwhile either.
                    _redis_trouble()
                grace = self.grace if self.grace is not None else (
                    _trouble["grace"] or 4 * self.interval)
                since = max(self._healthy_since, _trouble["at"])
                if not missing or time.monotonic() - since < grace:
                    continue  # Redis was away from us lately: the peers may be away too
                dead = await self.declare(missing)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("peer heartbeat check failed: %s", exc)
                _redis_trouble()
                continue
            if dead:
                logger.warning("peers without heartbeat: %s", ", ".join(sorted(dead)))
                self.on_dead(dead)


Peers = Callable[[], Iterable[str]]
OnDead = Callable[[set[str]], None]


class Liveness(Protocol):
    """How a process proves it is alive and learns which of its peers died."""

    @property
    def age(self) -> float:
        """Seconds since this process last proved it is alive."""

    @property
    def fresh(self) -> bool:
        """Whether its peers still count it alive."""

    @property
    def workers_full(self) -> bool:
        """Whether every live worker takes no new connection (at its concurrency cap, or
        draining), as their heartbeats said; False when unknown (``room.py``)."""

    async def start(self, channel: str, peers: Peers, on_dead: OnDead,
                    on_lost: Callable[[], None]) -> None:
        """Start beating as ``channel``; call ``on_dead`` with those of ``peers()`` that died
        and ``on_lost`` (on the loop) when this process was declared dead itself."""

    async def stop(self) -> None:
        """Stop beating (the heartbeat key goes) and watching."""


class RedisLiveness:
    """:class:`Liveness` on the relay's Redis: a :class:`Heartbeat` and a :class:`PeerWatch`.

    Peers are checked twice per beat (one MGET), so a dead peer is noticed at most TTL + half
    an interval after its last beat. The heartbeat reports the process's name
    (``settings.process_name()``), kind and pid, plus what ``status()`` adds; a worker's is
    also listed in ``wire.workers_key``, which an interface reads for ``workers_full``.
    """

    def __init__(self, settings: Any, status: Status | None = None,
                 pause: Pause | None = None) -> None:
        self.settings = settings
        self.status = status
        self.pause = pause
        self.heartbeat: Heartbeat | None = None
        self.watch: PeerWatch | None = None
        self.room: WorkerRoom | None = None  # interfaces only
        self._reading: asyncio.Task[None] | None = None
        self._redis: Any = None

    @property
    def age(self) -> float:
        return self.heartbeat.age if self.heartbeat is not None else float("inf")

    @property
    def fresh(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.fresh

    @property
    def workers_full(self) -> bool:
        return self.room is not None and self.room.full

    async def start(self, channel: str, peers: Peers, on_dead: OnDead,
                    on_lost: Callable[[], None]) -> None:
        s = self.settings
        self._redis = await redis_client(s.redis_url)
        worker = not channel.startswith(INTERFACE_CHANNELS)
        self.heartbeat = Heartbeat(s.redis_url, channel, interval=s.heartbeat_interval,
                                   ttl=s.heartbeat_ttl, on_lost=on_lost, prefix=s.key_prefix,
                                   status=self._report(channel),
                                   registry=workers_key(s.key_prefix) if worker else None,
                                   pause=self.pause)
        await self.heartbeat.start()
        heartbeat = self.heartbeat
        self.watch = PeerWatch(self._redis, peers, on_dead, interval=s.heartbeat_interval / 2,
                               cut_off=lambda: heartbeat.overdue, prefix=s.key_prefix)
        self.watch.start()
        if not worker:
            self.room = WorkerRoom(self._redis, prefix=s.key_prefix,
                                   interval=s.heartbeat_interval / 2,
                                   full_after=s.heartbeat_interval)
            self._reading = asyncio.create_task(self.room.keep_reading(), name="worker-room")

    def _report(self, channel: str) -> Status:
        kind = "interface" if channel.startswith(INTERFACE_CHANNELS) else "worker"
        base = {"name": self.settings.process_name(), "kind": kind, "pid": os.getpid()}
        extra = self.status
        return (lambda: base) if extra is None else (lambda: {**base, **extra()})

    async def stop(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)
        if self.watch is not None:
            await self.watch.stop()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self._redis is not None:
            await self._redis.aclose()
