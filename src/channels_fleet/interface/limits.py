"""Limits at the edge: connections per client (``CHANNELS_FLEET_MAX_CONNECTIONS_PER_CLIENT``),
the WebSocket origins admitted (``CHANNELS_FLEET_ALLOWED_ORIGINS``, :func:`origin_allowed`)
and the pace of a drain's closes (``CHANNELS_FLEET_DRAIN_CLOSE_RATE``, :func:`close_pacing`).

The gateway counts open WebSockets and HTTP requests per client address (``scope["client"]``,
which Daphne fills from the TCP peer). Past the limit a WebSocket is refused before anything is
relayed (HTTP 403, as any handshake refusal) and an HTTP request gets 429; each refusal is one
log line. 0 turns the limit off: the default, because behind an ingress or load balancer every
client arrives from the proxy's address (unless the proxy is trusted: ``proxy.py``).

    limit = ClientLimit(100)
    key = client_key(scope)
    if not limit.acquire(key, scope):
        await refuse(scope, receive, send)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)


def client_key(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class ClientLimit:
    """Open connections per client address, refused beyond ``limit`` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def acquire(self, key: str, scope: dict[str, Any]) -> bool:
        """Count one more connection from ``key``; False (and one log line) past the limit."""
        if not self.limit:
            return True
        count = self.open.get(key, 0)
        if count >= self.limit:
            logger.warning(
                "refused %s %s from %s: %d connections already open from this address "
                "(CHANNELS_FLEET_MAX_CONNECTIONS_PER_CLIENT=%d)",
                scope.get("type"), str(scope.get("path"))[:200], key, count, self.limit,
            )
            return False
        self.open[key] = count + 1
        return True

    def release(self, key: str) -> None:
        if not self.limit:
            return
        count = self.open.get(key, 0) - 1
        if count > 0:
            self.open[key] = count
        else:
            self.open.pop(key, None)


async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Refuse a connection over the limit: WebSocket 403 at the handshake, HTTP 429."""
    if scope["type"] == "websocket":
        event = await receive()
        if event["type"] == "websocket.connect":
            await send({"type": "websocket.close"})  # before accept: HTTP 403
        return
    await send({
        "type": "http.response.start",
        "status": 429,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1")],
    })
    await send({"type": "http.response.body", "body": b"Too many connections from your address\n"})


def close_pacing(sockets: int, rate: float, timeout: float) -> tuple[int, float]:
    """(sockets per batch, seconds between batches) to close ``sockets`` at ``rate`` per second,
    sped up to end within 60% of ``timeout``; ``rate`` 0: one batch."""
    if rate <= 0 or sockets == 0:
        return max(sockets, 1), 0.0
    rate = max(rate, sockets / (0.6 * timeout))
    batch = max(1, round(rate / 20))  # about 20 batches a second
    return batch, batch / rate


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
