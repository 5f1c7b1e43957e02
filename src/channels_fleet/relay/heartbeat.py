"""The heartbeat: a thread that keeps this process's key in Redis alive, proving it is alive.

Each process keeps ``fleet:hb:{hb}:<its relay channel>`` (``fleet``: the relay's key prefix)
alive with ``SET key <ts> PX ttl``: ``NX`` once at start, ``XX`` on every beat. A beat that
finds the key gone means the process was cut off long enough for its peers to declare it dead
(SIGSTOP, a network partition; ``tombstones.py``): its connections are no longer its own, so
``on_lost`` runs (on the event loop) and the process registers afresh.

The beat runs in its own thread with its own (sync) connection: a worker whose event loop is
busy starting thousands of consumers is slow, not dead, and must not be declared dead for it.
A killed or stopped process stops beating either way. Work that holds the whole process for
longer than the TTL (a full garbage collection over millions of objects holds the GIL, so
this thread cannot beat either) runs as the heartbeat's :class:`Pause`: announced by a beat
whose TTL covers it, then run on this thread.

The key's value is a small JSON status (``{"ts": ..., "name": "w1", "kind": "worker",
"sockets": 12, ...}``: what ``status()`` returns, counted beside the process's metrics by the
services) that :func:`channels_fleet.fleet.fleet_status` reads for every live process. Liveness
only asks whether the key exists; building the value takes about 0.1 ms a beat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from redis.backoff import NoBackoff
from redis.retry import Retry

from ..layers import acl
from ..layers.backoff import Backoff
from ..layers.clients import aread_server, sync_client
from .tombstones import REVIVE
from .trouble import TROUBLE
from .wire import heartbeat_key, tombstone_key

logger = logging.getLogger(__name__)

#: How long a beat waits for Redis before it gives up and tries again. A master that handed
#: its slots over and then went (a drained node: its address vanishes, so requests to it hang
#: rather than fail) must be found again well inside the TTL: one short wait, a slot-map
#: refresh (redis-py asks the failed node last), one retry without back-off, and the beat loop
#: tries again.
BEAT_TIMEOUT = 0.5
#: After a failed beat, the next one starts this soon instead of an interval later (doubling
#: up to the interval while Redis stays away: ``Heartbeat.retry``).
BEAT_RETRY = 0.1

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
        TROUBLE.allow(ttl + interval)
        #: Waits after failed beats: ``BEAT_RETRY``, doubling up to the interval.
        self.retry = Backoff(base=min(BEAT_RETRY, interval), cap=interval)
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
        cluster = (await aread_server(self.urls[0])).cluster
        self._client = sync_client(self.urls[0], cluster, BEAT_TIMEOUT,
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
        with acl.naming(self.urls[0], "SET", self.key):
            self._client.set(self.key, self.value(), px=self.ttl_ms, nx=True)
        if self.registry is not None:
            # Entries of processes killed without a word expire here.
            with acl.naming(self.urls[0], "ZREMRANGEBYSCORE", self.registry):
                self._client.zremrangebyscore(self.registry, "-inf", int(time.time() * 1000))
        self._enlist()
        self.last_beat = time.monotonic()

    def _enlist(self, ttl_ms: int | None = None) -> None:
        if self.registry is not None:
            expires = int(time.time() * 1000) + (ttl_ms or self.ttl_ms)
            with acl.naming(self.urls[0], "ZADD", self.registry):
                self._client.zadd(self.registry, {self.channel: expires})

    def beat(self) -> None:
        """Refresh the key; if it had expired, we were declared dead: hand over and re-register."""
        value = self.value()
        with acl.naming(self.urls[0], "SET", self.key):
            refreshed = self._client.set(self.key, value, px=self.ttl_ms, xx=True)
        if not refreshed:
            # Our key lapsed: Redis was away from us (or we stalled) for longer than the TTL,
            # so our peers' keys may have lapsed with it; they get their grace to beat again.
            TROUBLE.seen()
            with acl.naming(self.urls[0], "EVAL revive (calls DEL, SET)", self.tombstone):
                declared = self._client.eval(REVIVE, 2, self.key, self.tombstone,
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
        failures = 0
        failing_since = 0.0
        while not self._stop.wait(wait):
            started = time.monotonic()
            try:
                if self.pause is not None and self.pause.due() and self.run_pause(self.pause):
                    started = time.monotonic()  # beat at once: the key's TTL back to normal
                self.beat()
            except Exception as exc:
                TROUBLE.seen()
                # The key expires at the TTL whatever happens: try again soon, backing off.
                failures += 1
                if failures == 1:
                    failing_since = started
                    logger.warning("heartbeat %s failed: %s; retrying", self.key, exc)
                wait = self.retry.delay(failures)
                continue
            wait = self.interval
            if failures:
                logger.warning("heartbeat %s beating again after %.1f s", self.key,
                               time.monotonic() - failing_since)
                failures = 0
            if time.monotonic() - started > self.interval:
                TROUBLE.seen()  # the client retried through a failover before it got through
