"""Daphne's and autobahn's per-connection costs, taken off the interface's loop.

Daphne and autobahn do some work for every open connection, on a timer or at every connect:
invisible at a few hundred sockets, a stall of the whole loop at tens of thousands, during which
no frame moves. Each class or function here does the same work in time proportional to what
changed, or in short slices, or only when it is used (py-spy of the interface under
``bench/scale.py`` and ``bench/profiles.py``):

- ``defer_config_log``: autobahn formats its options for every new WebSocket;
- ``UnformattedDebug``: autobahn formats a debug line for every chunk a client sends;
- ``cheap_small_masks``: autobahn builds a cffi masker object for every frame a client sends;
- ``SlicedTimeouts``: Daphne's walk over every connection every 2 s (timeouts and due pings);
- ``ReapedOnChange``: Daphne's walk over every connection every second to reap finished
  applications and closed sockets;
- ``PingPhase``: sockets that connected (or last spoke) together, pinged together.

``SlicedTimeouts`` and ``ReapedOnChange`` go before ``daphne.server.Server`` in the interface's
server class, ``PingPhase`` and ``UnformattedDebug`` before Daphne's ``WebSocketProtocol``.
"""

from __future__ import annotations

import asyncio
import logging
import pprint
import random
import time
from typing import Any

import txaio

logger = logging.getLogger(__name__)


class _Pretty:
    """``pprint.pformat(value)``, computed only if a log line is really formatted."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    __repr__ = __str__


def defer_config_log() -> None:
    """Stop autobahn from pretty-printing its options for every new WebSocket.

    ``WebSocketProtocol._connectionMade`` passes ``pformat(<its 40 options>)`` to a debug
    log line that is dropped unless debug logging is on: 16% of the interface's CPU in a
    reconnect storm. The line is kept; it is formatted when logged, as any other.
    """
    from autobahn.websocket import protocol

    protocol.pformat = _Pretty  # type: ignore[assignment]


class UnformattedDebug:
    """A client's bytes go to autobahn's frame parser without its per-chunk debug line.

    autobahn's ``dataReceived`` builds the arguments of a debug line (``hltype``, ``hlval``:
    three ``click.style`` calls) for every chunk a client sends, logged or not: 3-4% of the
    interface's CPU in an echo. Unless txaio logs at debug level, where autobahn's own method
    (and line) runs, the chunk goes straight to the parser it calls.
    """

    def dataReceived(self, data: bytes) -> None:  # noqa: N802  (autobahn's names)
        if _debug_logged():
            super().dataReceived(data)  # type: ignore[misc]
        else:
            self._dataReceived(data)  # type: ignore[attr-defined]  # what autobahn's calls


def _debug_logged() -> bool:
    return txaio.get_global_log_level() in ("debug", "trace")  # type: ignore[attr-defined]


SMALL_FRAME = 128  # bytes: below this, autobahn picks its scalar masker too


class SmallFrameMasker:
    """Unmasks a small client frame's payload with one XOR of Python integers (autobahn's
    masker interface: ``process`` may get the payload in pieces, ``pointer`` counts bytes)."""

    __slots__ = ("mask", "done")

    def __init__(self, mask: bytes) -> None:
        self.mask = bytes(mask)
        self.done = 0

    def pointer(self) -> int:
        return self.done

    def reset(self) -> None:
        self.done = 0

    def process(self, data: bytes) -> bytes:
        size = len(data)
        turn = self.done & 3  # where in the 4-byte mask this piece starts
        mask = self.mask[turn:] + self.mask[:turn]
        self.done += size
        key = int.from_bytes(mask * ((size >> 2) + 1), "little") & ((1 << (size << 3)) - 1)
        return (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")


def cheap_small_masks() -> None:
    """Unmask small client frames without autobahn's per-frame cffi masker.

    For every masked frame autobahn builds a cffi masker (an import, two allocations, a gc
    hook): 6 us for a 20-byte frame, 4-5% of the interface's CPU in an echo. A frame under
    ``SMALL_FRAME`` bytes gets a :class:`SmallFrameMasker` instead (under 2 us); larger ones
    keep autobahn's SIMD masker.
    """
    from autobahn.websocket import protocol

    original = protocol.create_xor_masker
    if getattr(original, "small_frames", False):
        return

    def create_xor_masker(mask: bytes, length: int | None = None) -> Any:
        if length is not None and length < SMALL_FRAME:
            return SmallFrameMasker(mask)
        return original(mask, length)

    create_xor_masker.small_frames = True  # type: ignore[attr-defined]
    protocol.create_xor_masker = create_xor_masker


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor  # typed as an interface by Twisted's stubs


class SlicedTimeouts:
    """Daphne's ``timeout_checker`` in slices of at most ``SLICE_SIZE`` connections.

    Daphne walks every connection every 2 s (``check_timeouts``: timeouts, and the pings that
    fell due) in one callback: 9% of the interface's time at 5,000 idle sockets. Here the same
    walk is spread over the same 2 s, ``SLICE_SIZE`` connections per callback (a few ms; 20
    slices of 1,000 took 25-70 ms each at 20,000 sockets and held echoes up to 300 ms): each
    connection is still checked every 2 s, and one gone meanwhile is skipped.
    """

    SLICE_SIZE = 200
    TIMEOUT_PERIOD = 2.0

    connections: dict[Any, Any]

    def timeout_checker(self) -> None:
        clock = _reactor()
        protocols = list(self.connections)
        slices = -(-len(protocols) // self.SLICE_SIZE)  # ceil
        for nth in range(slices):
            part = protocols[nth * self.SLICE_SIZE:(nth + 1) * self.SLICE_SIZE]
            clock.callLater(nth * self.TIMEOUT_PERIOD / slices, self._check_slice, part)
        clock.callLater(self.TIMEOUT_PERIOD, self.timeout_checker)

    def _check_slice(self, protocols: list[Any]) -> None:
        for protocol in protocols:
            if protocol in self.connections:
                protocol.check_timeouts()


class ReapedOnChange:
    """Daphne's ``application_checker``, for the connections that changed since its last run.

    Daphne walks every connection every second to find the applications that finished (to log
    their exception, and drop them) and the closed sockets whose application is gone (to forget
    them), and cancels an application still running ``application_close_timeout`` after its
    socket closed: one callback of 20-50 ms at 15,000-20,000 idle sockets. Here an application's
    end and a socket's close each put the connection on a list, and the same 1 s check reads
    only that list; what happens to each connection is what Daphne does.
    """

    connections: dict[Any, Any]
    application_close_timeout: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app_ended: set[Any] = set()
        self._socket_closed: set[Any] = set()

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        queue = super().create_application(protocol, scope)  # type: ignore[misc]
        if queue is not None:
            app = self.connections[protocol]["application_instance"]
            app.add_done_callback(lambda _: self._app_ended.add(protocol))
        return queue

    def protocol_disconnected(self, protocol: Any) -> None:
        super().protocol_disconnected(protocol)  # type: ignore[misc]
        self._socket_closed.add(protocol)

    def application_checker(self) -> None:
        for protocol in self._app_ended | self._socket_closed:
            self._reap(protocol)
        _reactor().callLater(1, self.application_checker)

    def _reap(self, protocol: Any) -> None:
        details = self.connections.get(protocol)
        if details is None:
            self._app_ended.discard(protocol)
            self._socket_closed.discard(protocol)
            return
        closed_at = details.get("disconnected")
        app = details.get("application_instance")
        if app is not None and not app.done() and closed_at is not None \
                and time.time() - closed_at > self.application_close_timeout:
            logger.warning("Application instance %r for connection %r took too long to shut "
                           "down and was killed.", app, protocol)
            app.cancel()  # its end comes back through the done callback
        if app is not None and app.done():
            self._report(protocol, app, closed=closed_at is not None)
            del details["application_instance"]
            app = None
        self._app_ended.discard(protocol)
        if app is None and closed_at is not None:
            del self.connections[protocol]
            self._socket_closed.discard(protocol)

    def _report(self, protocol: Any, app: asyncio.Future[Any], *, closed: bool) -> None:
        if app.cancelled():
            return
        exception = app.exception()
        if exception is None:
            return
        if isinstance(exception, KeyboardInterrupt):
            self.stop()  # type: ignore[attr-defined]  # Daphne's: the server is asked to exit
            return
        logger.error("Exception inside application: %s", exception, exc_info=exception)
        if not closed:
            protocol.handle_exception(exception)


class PingPhase:
    """Each socket pinged at its own point of the ping interval, for as long as it lives.

    Daphne pings a socket ``ping_interval`` after its last ping or client message. Clients that
    connect together (reconnecting after a deploy) also send their first messages together, so
    they would be pinged together every interval from then on: thousands of pings, then their
    pongs, in one burst (a second of the interface's whole CPU every 20 s at 20,000 sockets,
    holding every frame meanwhile). Here each socket draws a phase once, and its ping clock
    runs that far ahead after its open and after each message: it is still pinged at least
    once an interval, and sockets that spoke together are pinged at different times.
    """

    last_ping: float
    muted: bool
    server: Any
    ping_phase = 0.0

    def onOpen(self) -> None:  # noqa: N802  (autobahn's names)
        super().onOpen()  # type: ignore[misc]
        self.ping_phase = random.uniform(0, self.server.ping_interval)
        self.last_ping -= self.ping_phase

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803
        super().onMessage(payload, isBinary)  # type: ignore[misc]
        if not self.muted:  # Daphne restarted the ping clock
            self.last_ping -= self.ping_phase
