"""``channels-fleet interface``: Daphne serving the gateway; holds sockets, imports no project code.

SIGTERM (or SIGINT) drains as uvicorn does, in steps under ``CHANNELS_FLEET_DRAIN_TIMEOUT``:
readiness turns false, the listening port closes, every WebSocket is closed with 1001 and its
owner told (so disconnect handlers run), HTTP requests in flight may finish, then the reactor
stops. (Daphne's own SIGTERM handling closes sockets without a close frame: clients see 1006.)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from channels_fleet.exceptions import STARTUP_FAILURE
from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.settings import SettingsError

from . import eventloop
from ._common import (
    Observability,
    bind_failure,
    reporting_liveness,
    setup_logging,
    startup_failure,
    tune_gc,
)

logger = logging.getLogger("channels_fleet.interface")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="channels-fleet interface")
    parser.add_argument("--bind", help="address to listen on (CHANNELS_FLEET_BIND, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="public port (CHANNELS_FLEET_PORT, 8000)")
    parser.add_argument("--metrics-port", type=int,
                        help="probes and metrics port (CHANNELS_FLEET_METRICS_PORT; unset: "
                             "the public port + 1000; 0: off)")
    parser.add_argument("--redis-url", help="comma-separated URLs (CHANNELS_FLEET_REDIS_URL)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        settings = InterfaceSettings.from_env(
            bind=args.bind, port=args.port, metrics_port=args.metrics_port,
            redis_url=args.redis_url,
        )
        loop = eventloop.use(settings.loop)  # before Daphne makes its loop
    except SettingsError as exc:
        print(f"channels-fleet interface: {exc}", file=sys.stderr)
        return STARTUP_FAILURE
    setup_logging(settings.log_level)
    logger.info("event loop: %s", loop)
    return Interface(settings).run()


class Interface:
    """The interface process: Daphne + gateway + probes + drain."""

    def __init__(self, settings: InterfaceSettings) -> None:
        # Importing daphne.server installs Twisted's asyncio reactor: do it here, not at import.
        from daphne.server import Server

        from channels_fleet.interface.gateway import Gateway
        from channels_fleet.interface.server_costs import (
            ReapedOnChange,
            SlicedTimeouts,
            cheap_small_masks,
            defer_config_log,
        )

        self.settings = settings
        self.gateway = Gateway(settings, liveness=reporting_liveness(settings, "interface"))
        self.ports: list[Any] = []
        self.exit_code = 0
        self.probes: Any = None
        self._draining = False
        interface = self

        defer_config_log()
        cheap_small_masks()

        class FleetServer(ReapedOnChange, SlicedTimeouts, Server):  # type: ignore[misc]
            def listen_success(self, port: Any) -> None:
                interface.ports.append(port)
                super().listen_success(port)

            def listen_error(self, failure: Any) -> None:
                # Daphne logs "Listen failure" and stops with status 0: say which port, fail.
                error = getattr(failure.value, "socketError", None)
                reason: Any = failure.getErrorMessage()
                if isinstance(error, OSError):
                    reason = bind_failure(settings.port, "CHANNELS_FLEET_PORT, --port", error)
                logger.critical("interface could not start: %s", reason)
                interface.exit_code = STARTUP_FAILURE
                self.stop()

        self.server = FleetServer(
            self.gateway,
            endpoints=[f"tcp:port={settings.port}:interface={settings.bind}"
                       f":backlog={settings.backlog}"],
            signal_handlers=False,
            request_buffer_size=settings.chunk_size,
            websocket_handshake_timeout=settings.connect_timeout,
            websocket_connect_timeout=settings.connect_timeout,
            application_close_timeout=settings.drain_timeout,
            http_timeout=settings.http_timeout or None,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            verbosity=0,
        )

    def run(self) -> int:
        from twisted.internet import reactor

        reactor.callWhenRunning(self._websocket_options)  # before the first connection
        reactor.callWhenRunning(lambda: asyncio.ensure_future(self._startup()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: reactor.callFromThread(self._begin_drain))
        self.server.run()
        return self.exit_code

    def _websocket_options(self) -> None:
        from daphne.ws_protocol import WebSocketProtocol

        from channels_fleet.interface.server_costs import PingPhase, UnformattedDebug

        class FleetWebSocketProtocol(  # type: ignore[misc]
                UnformattedDebug, PingPhase, WebSocketProtocol):
            pass

        factory = self.server.ws_factory
        factory.protocol = FleetWebSocketProtocol
        # autobahn drops the TCP connection on a protocol error by default (clients see
        # 1006); send the close frame instead: 1002 bad frame, 1007 bad UTF-8, 1009 too big.
        factory.setProtocolOptions(failByDrop=False)

    async def _startup(self) -> None:
        from twisted.internet import reactor

        try:
            await self.gateway.start()
            tune_gc()
            self.probes = await Observability().start(
                self.settings, self.gateway.ready, "interface"
            )
        except Exception as exc:
            logger.critical("interface could not start: %s",
                            startup_failure(exc, self.settings))
            self.exit_code = STARTUP_FAILURE
            reactor.stop()  # type: ignore[misc]  # twisted's reactor module is typed oddly
            return
        logger.info("interface listening on %s:%d", self.settings.bind, self.settings.port)

    def _begin_drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        from twisted.internet import defer, reactor

        timeout = self.settings.drain_timeout
        logger.info("draining (up to %.0fs)", timeout)
        try:
            # 1. Unready, 2. stop accepting, 3. close sockets (1001) and tell the owners.
            self.gateway.side.draining = True
            # The port closed before any B goes out: a client resuming at once would else
            # be taken into its backlog, then reset.
            loop = asyncio.get_running_loop()
            stopped = [defer.maybeDeferred(port.stopListening).asFuture(loop)
                       for port in self.ports]
            await asyncio.wait_for(asyncio.gather(*stopped), 2.0)
            closed = await asyncio.wait_for(self.gateway.drain(timeout - 0.5), timeout)
            logger.info("drained: %d WebSockets closed with 1001", closed)
            # Give the close frames a moment to leave before the reactor stops.
            await asyncio.sleep(0.2)
            if self.probes is not None:
                await self.probes.stop()
            await self.gateway.stop()
        except Exception as exc:
            logger.error("drain did not finish cleanly: %r", exc)
        finally:
            reactor.stop()  # type: ignore[misc]
