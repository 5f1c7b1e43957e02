"""``channels-fleet web WSGI_APP``: gunicorn (as a library) serving the project's Django WSGI app.

Pages, admin and APIs go here; sockets go to the interfaces. Probes and metrics are served by
a process the gunicorn master starts, on ``CHANNELS_FLEET_METRICS_PORT`` (0: off); /readyz
answers 200 while the project's default database does. On SIGTERM the workers finish their
requests for up to ``CHANNELS_FLEET_DRAIN_TIMEOUT`` seconds (gunicorn's graceful timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib
import logging
import math
import os
import signal
import subprocess
import sys
from typing import Any

from channels_fleet.exceptions import STARTUP_FAILURE, PortUnavailable
from channels_fleet.process import die_with_parent
from channels_fleet.settings import SettingsError, WebSettings, metrics_port_setting

from ._common import (
    check_port_free,
    import_asgi_application,
    setup_logging,
    start_probes_on,
    static_in_debug,
)

logger = logging.getLogger("channels_fleet.web")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="channels-fleet web")
    parser.add_argument("wsgi_app", nargs="?", help="module:attribute (CHANNELS_FLEET_WSGI_APP)")
    parser.add_argument("--bind", help="address (CHANNELS_FLEET_BIND, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (CHANNELS_FLEET_PORT, 8000)")
    parser.add_argument("--workers", type=int, help="processes (CHANNELS_FLEET_WEB_WORKERS, 2)")
    parser.add_argument("--metrics-port", type=int,
                        help="probes and metrics port (CHANNELS_FLEET_METRICS_PORT; unset: "
                             "the public port + 1000; 0: off)")
    return parser.parse_args(argv)


def _serve_probes(port: int, setting: str, log_level: str) -> None:
    """Run the probe server in its own small process, started by the gunicorn master.

    Not a thread of the master: gunicorn forks its workers from the master, and a fork taken
    while another thread holds a lock (logging, asyncio) can leave a worker deadlocked.
    """
    code = (f"from {__name__} import probe_process; "
            f"probe_process({port}, {setting!r}, {log_level!r})")
    subprocess.Popen([sys.executable, "-c", code],
                     preexec_fn=lambda: die_with_parent(signal.SIGTERM))


def probe_process(port: int, setting: str, log_level: str = "INFO") -> None:
    """Serve /healthz, /readyz (the database answers) and /metrics (every gunicorn worker's
    metric files)."""
    setup_logging(log_level)

    async def run() -> None:
        try:
            probes = await start_probes_on((port,), setting, _database_ready, "web")
        except PortUnavailable as exc:  # taken since main() checked it
            print(f"channels-fleet web serves no probes: {exc}", file=sys.stderr)
            return
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        if probes is not None:
            await probes.stop()

    asyncio.run(run())


# One thread, one connection kept between checks: a hung database blocks this thread only, and
# the probe's own deadline answers "not ready" meanwhile.
_DB_CHECKS = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="readyz-db")


async def _database_ready() -> tuple[bool, str]:
    """Ready while the project's default database answers (always, without Django settings)."""
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return True, "ok"
    return await asyncio.get_running_loop().run_in_executor(_DB_CHECKS, _check_database)


def _check_database() -> tuple[bool, str]:
    from django.conf import settings
    from django.db import connections

    if not settings.DATABASES:
        return True, "ok"
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any backend's error: not ready, and say which
        connection.close()
        return False, f"database unreachable: {type(exc).__name__}"
    return True, "ok"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        settings = WebSettings.from_env(
            wsgi_app=args.wsgi_app, bind=args.bind, port=args.port, web_workers=args.workers,
            metrics_port=args.metrics_port,
        )
    except SettingsError as exc:
        print(f"channels-fleet web: {exc}", file=sys.stderr)
        return STARTUP_FAILURE
    setup_logging(settings.log_level)
    probe_setting = metrics_port_setting(settings.metrics_port, settings.port)
    probe_port = next(iter(settings.metrics_ports()), 0)
    try:
        # Before gunicorn, which would retry a taken port for 5 s and say it its own way.
        check_port_free(settings.bind, settings.port, "CHANNELS_FLEET_PORT, --port")
        if probe_port:
            check_port_free("0.0.0.0", probe_port, probe_setting)
    except PortUnavailable as exc:
        logger.critical("web could not start: %s", exc)
        return STARTUP_FAILURE
    from channels_fleet.observability import web as web_metrics

    # Before anything imports prometheus_client: every gunicorn worker writes metric files.
    web_metrics.setup_multiprocess()
    from gunicorn.app.base import BaseApplication

    class FleetWeb(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", [f"{settings.bind}:{settings.port}"])
            self.cfg.set("workers", settings.web_workers)
            # gunicorn counts whole seconds.
            self.cfg.set("graceful_timeout", math.ceil(settings.drain_timeout))
            self.cfg.set("accesslog", "-")
            self.cfg.set("child_exit", web_metrics.child_exit)
            if probe_port:
                self.cfg.set("when_ready",
                             lambda _server: _serve_probes(probe_port, probe_setting,
                                                           settings.log_level))

        def load(self) -> Any:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            from channels_fleet.adopt import adopting

            module_name, _, attr = settings.wsgi_app.partition(":")
            # Here, in each gunicorn worker (no preload): views must send on the same layer
            # as the workers do.
            with adopting(settings.adopt_layers, settings.redis_url, settings.redis_access):
                app = getattr(importlib.import_module(module_name), attr)
                # As in runserver's single process: receivers the ASGI module's imports
                # connect fire for this tier's saves too.
                import_asgi_application()
            return web_metrics.instrument_wsgi(static_in_debug(app, asgi=False))

    FleetWeb().run()
    return 0
