"""``channels-fleet worker APP``: runs a Django Channels project's ASGI app for relayed connections.

APP is ``module:attribute`` (``chat_project.asgi:application``); ``DJANGO_SETTINGS_MODULE``
comes from the environment, or the module configures Django itself (as Daphne allows).

SIGTERM (or SIGINT): readiness turns false, no new connections are taken, owned WebSockets are
handed back to their interfaces in batches and re-homed on live workers without closing the
client's socket (``CHANNELS_FLEET_REHOME=off``: closed with 1012 so clients reconnect), HTTP
requests finish, background channels (``--channels``) finish the message each holds, the
project's channel layers are closed (what they prefetched goes back to Redis), and the process
exits within ``CHANNELS_FLEET_DRAIN_TIMEOUT``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from channels_fleet.exceptions import STARTUP_FAILURE
from channels_fleet.settings import SettingsError
from channels_fleet.worker.settings import WorkerSettings

from . import eventloop
from ._common import (
    Observability,
    reporting_liveness,
    setup_logging,
    startup_failure,
    static_in_debug,
    tune_gc,
)

logger = logging.getLogger("channels_fleet.worker")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="channels-fleet worker")
    parser.add_argument("app", nargs="?", help="module:attribute (CHANNELS_FLEET_APP)")
    parser.add_argument("--channels", help="background channels, a,b (CHANNELS_FLEET_CHANNELS)")
    parser.add_argument("--concurrency", type=int,
                        help="most owned connections (CHANNELS_FLEET_CONCURRENCY, 1000)")
    parser.add_argument("--metrics-port", type=int,
                        help="probes and metrics port (CHANNELS_FLEET_METRICS_PORT; unset: "
                             "the first free from 9100; 0: off)")
    parser.add_argument("--redis-url", help="comma-separated URLs (CHANNELS_FLEET_REDIS_URL)")
    return parser.parse_args(argv)


def load_app(spec: str, settings: WorkerSettings) -> Any:
    """Set Django up and import ``module:attribute`` (from the working directory too), adopting
    the project's channel layers (adopt.py) unless turned off."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import django
    from django.apps import apps
    from django.conf import settings as django_settings

    from channels_fleet.adopt import adopting

    module_name, _, attr = spec.partition(":")
    with adopting(settings.adopt_layers, settings.redis_url, settings.redis_access):
        if os.environ.get("DJANGO_SETTINGS_MODULE"):
            django.setup(set_prefix=False)
        # Otherwise the ASGI module configures Django, as for Daphne: it names its settings
        # (os.environ.setdefault) or calls settings.configure() (and django.setup()).
        module = importlib.import_module(module_name)
        if not (os.environ.get("DJANGO_SETTINGS_MODULE") or django_settings.configured):
            raise SettingsError(
                f"Django is not configured: DJANGO_SETTINGS_MODULE is not set, and "
                f"{module_name} neither sets it nor calls settings.configure(); "
                "the worker runs a Django project")
        if not apps.ready:
            django.setup(set_prefix=False)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SettingsError(f"{module_name} has no attribute {attr!r} (APP={spec})") from None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        settings = WorkerSettings.from_env(
            app=args.app, channels=args.channels, concurrency=args.concurrency,
            metrics_port=args.metrics_port, redis_url=args.redis_url,
        )
        loop = eventloop.use(settings.loop)
        setup_logging(settings.log_level)
        application = static_in_debug(load_app(settings.app, settings), asgi=True)
    except (SettingsError, ImportError, ImproperlyConfigured) as exc:
        print(f"channels-fleet worker: {exc}", file=sys.stderr)
        return STARTUP_FAILURE
    logger.info("event loop: %s", loop)
    return asyncio.run(serve(application, settings))


async def serve(application: Any, settings: WorkerSettings) -> int:
    from channels_fleet.observability.consumers import instrument_consumers
    from channels_fleet.worker import dbcleanup, dispatch
    from channels_fleet.worker.background import close_project_layers
    from channels_fleet.worker.host import Host

    # channels_fleet_handler_latency_seconds{consumer}: every consumer's dispatch, timed.
    instrument_consumers()
    dbcleanup.install()  # the per-event cleanup owed, paid before the next DB job
    dispatch.install()  # no task per layer receive
    # The heartbeat reads full_for() once started, when `host` is bound.
    host = Host(application, settings, liveness=reporting_liveness(
        settings, "worker", concurrency=settings.concurrency,
        full_for=lambda: host.full_for()))
    try:
        await host.start()
        tune_gc()
        probes = await Observability().start(settings, host.ready, "worker")
    except Exception as exc:
        logger.critical("worker could not start: %s", startup_failure(exc, settings))
        return STARTUP_FAILURE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("draining (up to %.0fs)", settings.drain_timeout)
    try:
        released, cancelled = await asyncio.wait_for(
            host.drain(settings.drain_timeout - 0.5), settings.drain_timeout
        )
        how = "handed back for re-homing" if settings.rehome else "released with 1012"
        logger.info("drained: %d sockets %s, %d app instances cancelled",
                    released, how, cancelled)
    except Exception as exc:
        logger.error("drain did not finish cleanly: %r", exc)
    # Nothing here receives any more: what the project's layers still hold goes back to Redis.
    await close_project_layers()
    await probes.stop()
    return 0
