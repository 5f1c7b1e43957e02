"""What the gateway does at the edge itself: origin checks and Daphne-specific socket writes.

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
from collections.abc import Iterable
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def origin_allowed(scope: dict[str, Any], allowed: Iterable[str]) -> bool:
    """Is the WebSocket's ``Origin`` acceptable? Non-browser clients (no Origin) are.

    ``allowed`` empty: the same host name as the ``Host`` header, any port (what Channels'
    ``AllowedHostsOriginValidator`` compares: a page served by the web tier on another port
    of the same host may open sockets). ``*``: any. Otherwise each entry is a full origin
    (``https://chat.example.com``), a host (``chat.example.com``) or a domain suffix
    (``.example.com``).
    """
    allowed = tuple(allowed)
    origin = _header(scope, b"origin")
    if origin is None or "*" in allowed:
        return True
    parts = urlsplit(origin)
    if not parts.netloc:
        return False
    host = parts.hostname or ""
    if not allowed:
        return host == (urlsplit("//" + (_header(scope, b"host") or "")).hostname or "")
    for entry in allowed:
        entry = entry.lower()
        if entry == origin.lower().rstrip("/") or entry == host:
            return True
        if entry.startswith(".") and (host.endswith(entry) or host == entry[1:]):
            return True
    return False


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


async def lifespan(receive: Any, send: Any) -> None:
    """Answer the ASGI lifespan protocol (servers other than Daphne use it)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
