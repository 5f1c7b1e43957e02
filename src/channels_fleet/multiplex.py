"""Several named JSON streams over one WebSocket, each served by its own consumer.

What Channels 1.x called ``WebsocketDemultiplexer``, rebuilt for Channels 4: every stream's
consumer runs as a full ASGI application instance inside the connection, with its own scope
(``scope["stream"]``), its own receive queue, its own channel name and group memberships on the
channel layer. Frames are ``{"stream": name, "payload": {...}}`` both ways.

Example::

    class Lobby(Demultiplexer):
        consumers = {"chat": ChatConsumer, "cards": CardBinding.consumer}

    websocket_urlpatterns = [path("ws/lobby/", Lobby.as_asgi())]

Control frames the client may see (all JSON objects):

- ``{"stream": name, "payload": ...}``: a message a stream's consumer sent.
- ``{"stream": name, "event": "closed", "code": 1000}``: that stream's consumer closed (or failed,
  code 1011); the socket and the other streams stay open.
- ``{"error": "...", "stream": name?}``: a frame the server could not route. Never fatal.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer

logger = logging.getLogger(__name__)

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Any]

# Close code reported for a stream whose consumer raised (RFC 6455 "internal error").
STREAM_FAILED = 1011


def _as_app(consumer: Any) -> ASGIApp:
    """A consumer class becomes an ASGI app via as_asgi(); an ASGI callable is used as is."""
    if isinstance(consumer, type) and hasattr(consumer, "as_asgi"):
        return consumer.as_asgi()
    if callable(consumer):
        return consumer
    raise TypeError(f"a Demultiplexer stream needs a consumer class or ASGI app, not {consumer!r}")


class _Stream:
    """One stream's child application: its queue, its task and where it is in its life."""

    def __init__(self, name: str, max_pending: int) -> None:
        self.name = name
        self.queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=max_pending)
        self.task: asyncio.Task | None = None
        self.closed = False


class Demultiplexer(AsyncJsonWebsocketConsumer):
    """Route ``{"stream", "payload"}`` frames to one child consumer per stream.

    Subclass and set ``consumers = {"name": ConsumerClass, ...}``. Override ``connect()`` to refuse
    the whole socket (for example an anonymous user); a child refusing its own connect only closes
    that stream.
    """

    consumers: dict[str, Any] = {}
    # Frames waiting for one stream's consumer; beyond this the client gets a "stream busy" error.
    max_pending = 100
    # How long the children get to run their disconnect handlers when the socket goes away.
    application_close_timeout = 5.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for consumer in cls.consumers.values():
            _as_app(consumer)  # A wrong entry fails at import, not at the first connection.

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams: dict[str, _Stream] = {}
        self._socket_open = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # However this consumer ends (even cancelled), no child task outlives it.
            for stream in self.streams.values():
                if stream.task is not None and not stream.task.done():
                    stream.task.cancel()

    async def dispatch(self, message: dict) -> None:
        # Routing a frame touches no database, so skip the thread hop of
        # aclose_old_connections() that Channels makes per message (it doubled the cost of a
        # frame); each stream's consumer still makes it for its own handlers.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    @property
    def _label(self) -> str:
        """Names this connection in log lines."""
        return getattr(self, "channel_name", None) or self.scope.get("path", "?")

    # -- the socket -------------------------------------------------------------------------

    async def websocket_connect(self, message: dict) -> None:
        await super().websocket_connect(message)
        if not self._socket_open:
            return  # connect() refused the socket: no stream is started.
        for name, consumer in self.consumers.items():
            self._start_stream(name, _as_app(consumer))

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        self._socket_open = True
        await super().accept(subprotocol, headers)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                      **kwargs: Any) -> None:
        # Parse here rather than in decode_json so that bad input becomes an error frame.
        if text_data is None:
            await self.send_error("binary frames are not supported")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: absurd nesting
            await self.send_error("malformed frame", detail="not JSON")
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.send_error("malformed frame", detail="expected a JSON object")
            return
        name = content.get("stream")
        if not isinstance(name, str) or "payload" not in content:
            await self.send_error("malformed frame", detail="expected stream and payload keys")
            return
        stream = self.streams.get(name)
        if stream is None:
            await self.send_error("unknown stream", stream=name)
            return
        if stream.closed:
            await self.send_error("stream closed", stream=name)
            return
        frame = {"type": "websocket.receive", "text": json.dumps(content["payload"])}
        try:
            stream.queue.put_nowait(frame)
        except asyncio.QueueFull:
            logger.warning("stream %s of %s: %d frames pending, refusing one",
                           name, self._label, self.max_pending)
            await self.send_error("stream busy", stream=name)

    async def websocket_disconnect(self, message: dict) -> None:
        self._socket_open = False
        await self._stop_streams(message.get("code", 1000))
        # The parent's handler leaves groups, runs disconnect() and stops this consumer.
        await super().websocket_disconnect(message)

    async def send_error(self, error: str, **fields: Any) -> None:
        """Tell the client a frame was refused; the socket stays open."""
        await self.send_json({"error": error, **fields})

    # -- the children -----------------------------------------------------------------------

    def stream_scope(self, name: str) -> dict:
        """The scope stream ``name``'s consumer gets: the socket's, plus ``scope["stream"]``.

        Override to give a stream what its consumer expects, for example URL kwargs.
        """
        return dict(self.scope, stream=name)

    def _start_stream(self, name: str, app: ASGIApp) -> None:
        stream = _Stream(name, self.max_pending)
        self.streams[name] = stream
        scope = self.stream_scope(name)

        async def send(message: dict) -> None:
            await self._child_sent(stream, message)

        stream.queue.put_nowait({"type": "websocket.connect"})
        stream.task = asyncio.ensure_future(self._run_stream(stream, app, scope, send))

    async def _run_stream(self, stream: _Stream, app: ASGIApp, scope: dict,
                          send: Callable[[dict], Awaitable[None]]) -> None:
        try:
            await app(scope, stream.queue.get, send)
        except (asyncio.CancelledError, StopConsumer):
            raise
        except Exception:
            # One stream's bug must not take the socket or the other streams down.
            logger.exception("stream %s of %s failed", stream.name, self._label)
            if not stream.closed:
                await self._close_stream(stream, STREAM_FAILED, tell_child=False)
            return
        if not stream.closed and self._socket_open:
            # The child returned without closing: the stream is over all the same.
            await self._close_stream(stream, 1000, tell_child=False)

    async def _child_sent(self, stream: _Stream, message: dict) -> None:
        kind = message.get("type")
        if not self._socket_open or stream.closed:
            return  # Late output of a stream that is gone: nobody to send it to.
        if kind == "websocket.accept":
            return  # The socket was accepted once, by the demultiplexer.
        if kind == "websocket.send":
            if message.get("text") is None:
                logger.warning("stream %s of %s sent a binary frame; JSON streams carry text only",
                               stream.name, self._label)
                await self.send_error("binary frame from stream", stream=stream.name)
                return
            try:
                payload = json.loads(message["text"])
            except ValueError:
                payload = message["text"]
            await self.send_json({"stream": stream.name, "payload": payload})
        elif kind == "websocket.close":
            await self._close_stream(stream, message.get("code") or 1000, tell_child=True)
        else:
            logger.warning("stream %s of %s sent unexpected %r", stream.name, self._label, kind)

    async def _close_stream(self, stream: _Stream, code: int, tell_child: bool) -> None:
        stream.closed = True
        if tell_child:
            # As a server does after a close: the child's disconnect handler runs (leaves its
            # groups) and its consumer stops.
            self._offer(stream, {"type": "websocket.disconnect", "code": code})
        if self._socket_open:
            await self.send_json({"stream": stream.name, "event": "closed", "code": code})

    @staticmethod
    def _offer(stream: _Stream, message: dict) -> None:
        # A full queue belongs to a stuck child; the stop below cancels it after the timeout.
        try:
            stream.queue.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("stream %s: queue full, dropped %s", stream.name, message["type"])

    async def _stop_streams(self, code: int) -> None:
        tasks = []
        for stream in self.streams.values():
            if stream.task is None or stream.task.done():
                continue
            if not stream.closed:
                stream.closed = True
                self._offer(stream, {"type": "websocket.disconnect", "code": code})
            tasks.append(stream.task)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.application_close_timeout)
        for task in pending:
            logger.warning("stream consumer %r did not stop within %.1fs; cancelling",
                           task, self.application_close_timeout)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
