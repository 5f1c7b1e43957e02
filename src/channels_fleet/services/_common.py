"""What every channels-fleet service does the same way: logging, startup failures, probes."""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from channels_fleet.exceptions import PortUnavailable

logger = logging.getLogger("channels_fleet.services")


def startup_failure(exc: BaseException, settings: Any) -> str:
    """What one log line says of a failed start: the port it could not bind, or the Redis it
    could not use, when it is that."""
    from redis.exceptions import RedisError

    from channels_fleet.adopt import redact

    if isinstance(exc, PortUnavailable):
        return str(exc)
    if isinstance(exc, RedisError | OSError):
        where = ", ".join(redact(url) for url in settings.redis_url)
        return f"Redis at {where}: {type(exc).__name__}: {exc}"
    return repr(exc)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
        stream=sys.stderr,
    )


def bind_failure(port: int, setting: str, exc: OSError) -> PortUnavailable:
    """The one-line reason ``port`` (changed by ``setting``) could not be bound."""
    if exc.errno == errno.EADDRINUSE:
        why = "is in use by another process"
    elif exc.errno == errno.EACCES:
        why = "needs root or CAP_NET_BIND_SERVICE (a port below 1024)"
    else:
        why = f"cannot be bound: {exc.strerror or exc}"
    return PortUnavailable(f"port {port} ({setting}) {why}")


async def start_probes(
    settings: Any, readiness: Callable[[], Awaitable[tuple[bool, str]]], component: str
) -> Any:
    """Start /healthz, /readyz and /metrics on the first free of ``settings.metrics_ports()``
    (none: no probes); returns the server or None. PortUnavailable says which and why."""
    from channels_fleet.settings import metrics_port_setting

    setting = metrics_port_setting(settings.metrics_port, settings.public_port)
    return await start_probes_on(settings.metrics_ports(), setting, readiness, component)


async def start_probes_on(
    ports: Sequence[int], setting: str, readiness: Callable[[], Awaitable[tuple[bool, str]]],
    component: str,
) -> Any:
    """:func:`start_probes` on the first free of ``ports`` (``setting`` changes them)."""
    from channels_fleet.observability.probes import ProbeServer

    hint = "; set CHANNELS_FLEET_METRICS_PORT (--metrics-port) to a free port, or 0 for none"
    for port in ports:
        probes = ProbeServer("0.0.0.0", port, readiness=readiness, component=component)
        try:
            await probes.start()
            return probes
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or len(ports) == 1:
                raise PortUnavailable(f"{bind_failure(port, setting, exc)}{hint}") from exc
    if ports:
        raise PortUnavailable(f"no free port for the probes ({setting}){hint}")
    return None


def check_port_free(host: str, port: int, setting: str) -> None:
    """Raise PortUnavailable now if ``host:port`` cannot be bound (before a server that would
    retry or report it less plainly tries)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers set it
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise bind_failure(port, setting, exc) from exc


def reporting_liveness(settings: Any, kind: str, concurrency: int | None = None,
                       full_for: Callable[[], float] | None = None) -> Any:
    """Heartbeats that carry this process's status (name, sockets, closes, re-homes: counted
    beside its metrics; a worker's cap and how long it has been full) for
    ``channels_fleet.fleet_status()`` and the interfaces (``relay/room.py``)."""
    from channels_fleet.observability.status import StatusReport
    from channels_fleet.relay.liveness import RedisLiveness

    report = StatusReport("interface" if kind == "interface" else "worker",
                          concurrency=concurrency, full_for=full_for)
    return RedisLiveness(settings, status=report, pause=FrozenCollection(GC_FROZEN_INTERVAL))


class Observability:
    """Probes, the work-queue collector and the event-loop lag probe of an interface or worker
    (metrics port 0: none of them)."""

    def __init__(self) -> None:
        self.probes: Any = None
        self.collector: Any = None
        self.loop_lag: Any = None

    async def start(
        self, settings: Any, readiness: Callable[[], Awaitable[tuple[bool, str]]], component: str
    ) -> Observability:
        self.probes = await start_probes(settings, readiness, component)
        if self.probes is not None:
            from channels_fleet.observability.queues import QueueCollector

            # Read from Redis at each scrape of the probes' /metrics.
            self.collector = QueueCollector.for_settings(settings).register()
            from channels_fleet.observability.looplag import LoopLagProbe
            from channels_fleet.observability.metrics import METRICS

            self.loop_lag = LoopLagProbe(METRICS.event_loop_lag.labels(component)).start()
        return self

    async def stop(self) -> None:
        if self.loop_lag is not None:
            self.loop_lag.stop()
        if self.collector is not None:
            self.collector.close()
        if self.probes is not None:
            try:
                await self.probes.stop()
            except Exception as exc:
                logger.warning("could not stop the probe server: %r", exc)


def static_in_debug(app: Any, *, asgi: bool) -> Any:
    """With DEBUG and django.contrib.staticfiles, serve STATIC_URL as ``runserver`` does.

    A project run as it is in development keeps its styles and scripts, on the web tier and
    through the interfaces; in production (DEBUG off) static files come from
    ``collectstatic`` behind WhiteNoise, a CDN or the Ingress, and nothing here changes.
    """
    from django.apps import apps
    from django.conf import settings

    if not settings.DEBUG or not apps.is_installed("django.contrib.staticfiles"):
        return app
    from django.contrib.staticfiles import handlers

    logger.info("DEBUG is on: serving %s from the apps' static files, as runserver does",
                settings.STATIC_URL)
    return handlers.ASGIStaticFilesHandler(app) if asgi else handlers.StaticFilesHandler(app)


def import_asgi_application() -> None:
    """Import the project's ``ASGI_APPLICATION`` in a process that serves only its views.

    Under ``runserver`` or a single Daphne, views run in the process that imported the ASGI
    module, so what importing it registers (signal receivers in consumer modules, such as
    djangochannelsrestframework's ``model_observer``) fires for saves made by views too. The
    web tier imports it for the same reason; it never serves it. If it cannot be imported
    here, one warning says so and the web tier serves on.
    """
    from django.conf import settings
    from django.utils.module_loading import import_string

    spec = getattr(settings, "ASGI_APPLICATION", None)
    if not spec:
        return
    try:
        import_string(spec)
    except Exception as exc:
        logger.warning("ASGI_APPLICATION %s could not be imported (%r): receivers registered by "
                       "importing it will not run for this process's views", spec, exc)


#: First-generation collection threshold for processes holding thousands of sockets.
GC_YOUNG_THRESHOLD = 7000
#: How often one full collection walks what was frozen, so cycles among it (connections
#: since closed) are reclaimed.
GC_FROZEN_INTERVAL = 600.0


def tune_gc() -> None:
    """Collect less often in a process that holds thousands of long-lived connections.

    Called once the service has started. What exists now (Django, the project, the server) is
    moved out of the collector's sight (``gc.freeze``): it lives as long as the process and
    was rescanned by every full collection, which took 0.4 s at 230,000 objects in a worker
    with 2,500 sockets. Young collections run after 7,000 new objects instead of 700: a group
    message to 2,500 consumers queues more than that in one turn. Measured with 5,000 sockets
    on 2 interfaces and 2 workers: broadcast p95 about 10% lower, worker CPU per broadcast
    150 -> 130 ms. Then the connections' own objects are kept out of sight the same way, once
    they have lived a while (:class:`FreezeSurvivors`), and walked once in a while by the
    heartbeat's :class:`FrozenCollection`.
    """
    import gc

    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    gc.callbacks.append(FreezeSurvivors())


class FreezeSurvivors:
    """A ``gc.callbacks`` entry: what survives a collection of the older generations is frozen.

    An interface or worker holds 65-75 tracked objects per connection (autobahn's, Twisted's
    and Daphne's state; Channels' consumer, its coroutines and futures): 700,000 at 10,000
    connections, which every full collection walked for 0.5-0.9 s, collecting next to
    nothing (0-87 objects), every few broadcasts: the objects in flight promoted to the old
    generation set it off. Frozen once they have lived through a generation-1 collection,
    they are not walked again; they are freed by reference counting as ever, and cycles that
    die young are still collected. Measured with 20,000 sockets on 2 interfaces and 2 workers:
    the longest full collection 540-880 ms -> 33-63 ms (docs/benchmarks.md). A connection
    frozen while open leaves its cycles (about 53 objects) frozen when it closes:
    :class:`FrozenCollection` reclaims them.
    """

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        import gc

        if phase == "stop" and info["generation"] > 0:
            gc.freeze()


class FrozenCollection:
    """The heartbeat thread's :class:`~channels_fleet.relay.heartbeat.Pause`: every
    ``interval`` seconds, one full collection over everything frozen, then freeze again.

    That walk holds the GIL for as long as it takes (3.2 s over the 1.57 million objects an
    interface had frozen after three bursts of 10,000 connects; about 1 µs per object), longer
    than the heartbeat's TTL: run as a collection at an arbitrary moment it got a busy
    interface declared dead by its peers and its sockets closed (docs/benchmarks.md, s9).
    As the heartbeat's pause it is announced first, by a beat that keeps the process's key
    alive ``budget`` seconds longer.
    """

    budget = 30.0

    def __init__(self, interval: float, clock: Callable[[], float] | None = None) -> None:
        import time

        self.interval = interval
        self.clock = clock or time.monotonic
        self.walked_at = self.clock()

    def due(self) -> bool:
        return self.clock() - self.walked_at >= self.interval

    def run(self) -> None:
        import gc
        import time

        started = time.perf_counter()
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        self.walked_at = self.clock()
        logger.info("gc: one full collection over %d frozen objects took %.0f ms, collected %d",
                    frozen, (time.perf_counter() - started) * 1000, collected)
