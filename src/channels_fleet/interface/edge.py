"""Writing to the clients: the apps' messages (:class:`ClientWriter`), the interface's own
endings (close codes, 503), and the Daphne-specific socket writes under both.

The writer writes what a connection's current owner relays (the gateway finds the connection,
``Connections.current``) and moves the connection's state where a message decides it: an
accept ends re-homing, a close or a response's last body finishes it. It tells no owner
anything; where a write cuts the client off, the caller does (``Claims.tell_gone``).

Daphne 4.2's ASGI ``send`` ignores the ``headers`` of ``websocket.accept`` and the ``reason`` of
``websocket.close``, and hides how much is buffered for a slow client. When ``send`` is
Daphne's (``partial(server.handle_reply, protocol)``) these helpers reach the protocol for
those three things; with any other server they fall back to plain ASGI.

This is the one module allowed to read other objects' private members: autobahn's
``_perMessageCompress`` and Twisted's ``_tempDataLen`` have no public equivalent, and each
read is guarded so that a server without them takes the plain ASGI path.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from http import HTTPStatus
from typing import Any

from ..observability.metrics import METRICS
from ..relay.side import TaskSet
from ..resume.envelope import END, SUBPROTOCOL
from .client import DETACHED, REHOMING, ClientConn

logger = logging.getLogger(__name__)

_MESSAGES_OUT = METRICS.messages.labels("out")  # looked up once: labels() takes a lock


class ClientWriter:
    """Writes to a gateway's clients; one per gateway."""

    def __init__(self, send_buffer: int, tasks: TaskSet) -> None:
        self.send_buffer = send_buffer  # bytes a client may leave unread before it is cut off
        self.tasks = tasks

    async def write(self, conn: ClientConn, message: dict[str, Any]) -> bool:
        """Write one of the app's messages to the client; False if that cut the client off
        (it does not read): its owner is to be told. Raises what the server refuses."""
        kind = message["type"]
        if not conn.ws:
            if kind == "http.response.start":
                conn.accepted = True
            await conn.send(message)
            if kind == "http.response.body" and not message.get("more_body", False):
                conn.finish()
                conn.mark_responded()
            return True
        if kind == "websocket.send":
            if conn.session is not None:
                if conn.state is DETACHED or conn.session.back:
                    return True  # its socket is gone or sent B: the owner keeps its frames
                message = conn.session.wrap(message)
            _MESSAGES_OUT.inc()
            if not write_message(conn.send, message):
                await conn.send(message)
            if unsent_bytes(conn.send) > self.send_buffer:
                logger.warning("%s: client is not reading; disconnecting", conn.id)
                METRICS.messages_dropped.labels("buffer_full").inc()
                conn.finish()
                abort(conn.send)
                return False
        elif kind == "websocket.accept":
            await self._accepted(conn, message)
        elif kind == "websocket.http.response.start" and not conn.accepted:
            # The app failed before accepting (worker/instance.py): refused with its status,
            # 500 for a crash (as Daphne) or 404 for an unknown path.
            conn.finish()
            METRICS.websocket_closed(1011)
            await deny(conn.send, message.get("status", 500))
        elif kind == "websocket.close":
            await self._closed_by_app(conn, message)
        else:
            await conn.send(message)  # an ASGI extension left to the server
        return True

    async def _accepted(self, conn: ClientConn, message: dict[str, Any]) -> None:
        if conn.app_accepted():
            METRICS.rehome_gap.observe(time.monotonic() - conn.handover_at)
        if conn.accepted:
            return  # a re-homed socket: the client has its accept already
        conn.accepted = True
        conn.subprotocol = message.get("subprotocol")
        if conn.session is None:
            await accept(conn.send, message)
            return
        # A session's socket selects the protocol; the app's choice goes in the hello, first.
        await accept(conn.send, {**message, "subprotocol": SUBPROTOCOL})
        await self.control(conn, conn.session.hello(False, conn.subprotocol))

    async def resumed(self, conn: ClientConn, protocol: str | None) -> None:
        """A session taken over (RESUMED): accept the resuming socket and write the hello;
        the owner's replayed frames follow."""
        assert conn.session is not None
        conn.accepted = True
        conn.subprotocol = protocol
        await accept(conn.send, {"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
        await self.control(conn, conn.session.hello(True, protocol))

    async def control(self, conn: ClientConn, text: str) -> None:
        """Write one of the protocol's own messages (H, A, B, X) to a session's socket."""
        message = {"type": "websocket.send", "text": text}
        if not write_message(conn.send, message):
            await conn.send(message)

    async def superseded(self, conn: ClientConn) -> None:
        """Another socket resumed the session: close this one 4001, no X. Not counted among
        the closes: nobody was disconnected (``sessions_resumed_total`` counts it, where it
        resumed), as a re-homed socket is no close either."""
        await close(conn.send, {"code": 4001}, accepted=True)

    async def _closed_by_app(self, conn: ClientConn, message: dict[str, Any]) -> None:
        refused_rehome = conn.state is REHOMING and conn.accepted
        conn.finish()
        code = message.get("code") or 1000
        if refused_rehome:
            # Refused on re-home (what is HTTP 403 at a first connect): the socket is open
            # already, so it gets a close frame, 1008 unless the app gave a code.
            code = message.get("code") or 1008
            message = {**message, "code": code}
            logger.info("%s: the app refused the re-homed connection (%d)", conn.id, code)
        METRICS.websocket_closed(code)
        if conn.session is not None and conn.accepted:
            await self.control(conn, END)  # the session is over; the close is final
        await close(conn.send, message, accepted=conn.accepted)

    def refused(self, conn: ClientConn) -> bool:
        """The server refused an app's message: end the connection as Daphne ends one whose app
        crashed (:func:`fail`). False if it was finished already; else its owner is to be told."""
        if not conn.finish():
            return False
        fail(conn.send)
        conn.mark_responded()
        return True

    async def end(self, conn: ClientConn, code: int) -> None:
        """End the client side: WebSocket close ``code``, HTTP 503 (or abort mid-response)."""
        if not conn.finish():
            return
        if conn.ws:
            METRICS.websocket_closed(code)
            if not conn.accepted:
                # Accept first so the client sees a close code rather than a bare HTTP 403.
                conn.accepted = True
                await conn.send({"type": "websocket.accept"})
            await close(conn.send, {"code": code}, accepted=True)
        elif not conn.accepted:
            conn.accepted = True
            await http_error(conn.send, 503)
        else:
            abort(conn.send)
        conn.mark_responded()

    async def refuse_handshake(self, conn: ClientConn) -> None:
        """Refuse a WebSocket no app has seen: a close before accept, HTTP 403 (as Daphne)."""
        await conn.send({"type": "websocket.close"})

    def spawn_end(self, conn: ClientConn, code: int) -> None:
        """:meth:`end`, in a task of its own (from code that cannot wait)."""
        self.tasks.spawn(self.end(conn, code), f"end {conn.id}")


def _protocol(send: Any) -> Any:
    if isinstance(send, partial) and send.args:
        return send.args[0]
    return None


async def accept(send: Any, message: dict[str, Any]) -> None:
    """Accept a WebSocket, with the app's extra headers when the server can send them."""
    headers = message.get("headers") or []
    proto = _protocol(send)
    deferred = getattr(proto, "handshake_deferred", None)
    if headers and deferred is not None:
        # autobahn takes (subprotocol, {name: value}) from the onConnect deferred.
        extra = {bytes(k).decode("latin-1"): bytes(v).decode("latin-1") for k, v in headers}
        del proto.handshake_deferred
        deferred.callback((message.get("subprotocol"), extra))
        return
    await send({"type": "websocket.accept", "subprotocol": message.get("subprotocol")})


async def close(send: Any, message: dict[str, Any], *, accepted: bool) -> None:
    """Close a WebSocket with the app's code and reason (before accept: HTTP 403).

    autobahn's public ``sendClose`` refuses the service codes 1001, 1012 and 1013 ("must be
    1000 or from [3000, 4999]"), which Daphne's ``send`` uses: write the close frame below it.
    """
    code = message.get("code") or 1000
    reason = (message.get("reason") or "")[:120]
    proto = _protocol(send)
    if accepted and proto is not None and hasattr(proto, "sendCloseFrame"):
        proto.sendCloseFrame(code=code, reasonUtf8=reason.encode() or None, isReply=False)
        return
    await send({"type": "websocket.close", "code": code})


async def deny(send: Any, status: int) -> None:
    """Refuse a WebSocket handshake with HTTP ``status``, as Daphne does when the app crashes
    before accepting (500); another server gets a plain refusal (403)."""
    proto = _protocol(send)
    deferred = getattr(proto, "handshake_deferred", None)
    if deferred is not None:
        from autobahn.websocket.types import ConnectionDeny

        del proto.handshake_deferred
        deferred.errback(ConnectionDeny(code=status, reason=HTTPStatus(status).phrase))
        return
    await send({"type": "websocket.close"})


def write_message(send: Any, message: dict[str, Any]) -> bool:
    """Write a ``websocket.send`` straight to the client's socket as one frame.

    Daphne's path (``handle_reply`` -> autobahn ``sendMessage`` -> Twisted ``write``) costs
    about 100 us a frame, most of it Twisted registering the socket for writability and
    unregistering it once written: a broadcast to thousands of sockets spends its time
    there. When nothing is queued for the socket, the frame goes out with one ``send``;
    what the kernel does not take goes to Twisted as before, so order is kept.

    Returns False, having written nothing, when another path must be taken (not Daphne's
    protocol, not open, compression negotiated, a fragmented message or anything else
    queued, TLS, both ``text`` and ``bytes``): the caller then uses ``send``.
    """
    proto = _protocol(send)
    if (
        getattr(proto, "STATE_OPEN", None) is None  # not autobahn's protocol
        or proto.state != proto.STATE_OPEN
        or proto._perMessageCompress is not None  # noqa: SLF001 (autobahn, see module doc)
        or proto.send_state != proto.SEND_STATE_GROUND
        or proto.send_queue
        or proto.autoFragmentSize
    ):
        return False
    transport = proto.transport
    if (
        getattr(transport, "TLS", True)
        or transport.dataBuffer
        or transport._tempDataLen  # noqa: SLF001 (Twisted's buffer, see module doc)
        or not transport.connected
        or transport.disconnecting
    ):
        return False
    data, text = message.get("bytes"), message.get("text")
    if data and text:
        return False  # Daphne refuses it; let it say so
    if data:
        frame = _frame_header(0x82, len(data)) + data
    elif text:
        payload = text.encode()
        frame = _frame_header(0x81, len(payload)) + payload
    else:
        return True  # Daphne sends nothing for an empty message: neither do we
    try:
        sent = transport.socket.send(frame)
    except OSError:  # would block, interrupted, or broken: Twisted's write handles each
        sent = 0
    if sent < len(frame):
        transport.write(frame[sent:])
    return True


def _frame_header(first: int, length: int) -> bytes:
    """A server frame's header (FIN + opcode, unmasked length)."""
    if length <= 125:
        return bytes((first, length))
    if length <= 0xFFFF:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def unsent_bytes(send: Any) -> int:
    """Bytes written to the client's socket but not yet taken by the kernel (0 if unknown)."""
    transport = getattr(_protocol(send), "transport", None)
    if transport is None:
        return 0
    return len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)


def abort(send: Any) -> None:
    """Drop the client's TCP connection at once (a slow reader, a response cut short)."""
    proto = _protocol(send)
    transport = getattr(proto, "transport", None) or getattr(
        getattr(proto, "channel", None), "transport", None
    )
    if transport is not None and hasattr(transport, "abortConnection"):
        transport.abortConnection()


def fail(send: Any) -> None:
    """End a connection whose app's message the server refused, as Daphne ends one whose app
    crashed: a WebSocket handshake refused with 500 or the socket closed with 1011; an HTTP
    response not begun answered 500 (unless Daphne answered already), one begun cut short."""
    proto = _protocol(send)
    if proto is None:
        return
    deferred = getattr(proto, "handshake_deferred", None)
    if deferred is not None:
        from autobahn.websocket.types import ConnectionDeny

        del proto.handshake_deferred
        deferred.errback(ConnectionDeny(code=500, reason=HTTPStatus(500).phrase))
    elif hasattr(proto, "sendCloseFrame"):
        proto.sendCloseFrame(code=1011, isReply=False)
    elif getattr(proto, "finished", True):
        return  # answered already (Daphne's own 500 for headers that are not bytes)
    elif not getattr(proto, "startedWriting", True):
        # Twisted's public Request API: Daphne's state may be half-set by the refused start.
        proto.setResponseCode(500)
        proto.responseHeaders.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
        proto.write(b"Server Error\n")
        proto.finish()
    else:
        abort(send)


async def http_error(send: Any, status: int) -> None:
    body = {503: b"Service Unavailable: try again shortly\n"}.get(status, b"Error\n")
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1")],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})
