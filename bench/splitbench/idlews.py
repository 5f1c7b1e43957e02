"""A minimal WebSocket client for the broadcast benchmark's thousands of idle sockets.

A full client (``websockets``) spends tens of microseconds of Python per received frame, so
5,000 sockets in one process queue the arrivals behind the client's own work and a broadcast
looks slower than the servers made it. Here each socket is a bare ``asyncio.Protocol``: the
arrival time is taken in ``data_received``, the first moment the bytes reach this process.
It answers pings (Daphne pings idle sockets) and closes politely; nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from typing import Any

_OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked, unfragmented client frame (payload < 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class IdleSocket(asyncio.Protocol):
    """One client WebSocket that records when each data frame arrives."""

    def __init__(self, host: str, path: str) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self.opened = asyncio.get_running_loop().create_future()
        self.arrivals: list[float] = []
        self.texts: list[bytes] = []
        self.closed = False
        self.close_code: int | None = None  # the server's close frame's code, once received
        # Called on each data frame: one counter for thousands of sockets instead of a task
        # waiting on each (the client's own work would otherwise delay the arrivals).
        self.on_frame: Callable[[], None] | None = None
        self._buf = b""
        self._upgraded = False
        self._transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self._buf += data
        if not self._upgraded:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self._buf = self._buf[:end], self._buf[end + 4:]
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self._fail(ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                return
            self._upgraded = True
            if not self.opened.done():
                self.opened.set_result(None)
        self._frames(now)

    def _frames(self, now: float) -> None:
        buf = self._buf
        while len(buf) >= 2:
            opcode, length, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    break
                (length,), offset = struct.unpack_from("!H", buf, 2), 4
            elif length == 127:
                if len(buf) < 10:
                    break
                (length,), offset = struct.unpack_from("!Q", buf, 2), 10
            if len(buf) < offset + length:
                break
            payload, buf = buf[offset:offset + length], buf[offset + length:]
            if opcode in (_OP_TEXT, _OP_BINARY):
                self.arrivals.append(now)
                self.texts.append(payload)
                if self.on_frame is not None:
                    self.on_frame()
            elif opcode == _OP_PING:
                self._transport.write(_client_frame(_OP_PONG, payload[:125]))
            elif opcode == _OP_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if length >= 2 else 1005
                self.closed = True
                self._transport.close()
        self._buf = buf

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionError("closed before the handshake"))
        if self.on_frame is not None:
            self.on_frame()

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
            self.opened.exception()  # retrieved: nobody awaits it once open_idle timed out
            self._transport.close()

    def send_text(self, text: str) -> None:
        """One masked text frame (under 126 bytes): an echo request."""
        self._transport.write(_client_frame(_OP_TEXT, text.encode()))

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_client_frame(_OP_CLOSE, struct.pack("!H", 1000)))
            self._transport.close()


def watch_arrivals(socks: list[IdleSocket], nth: int) -> asyncio.Future[None]:
    """A future done once each of ``socks`` has its ``nth`` data frame or is closed.

    One callback per socket instead of a task waiting on each (the client's own work would
    otherwise delay the arrivals); clear the sockets' ``on_frame`` when done.
    """
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    pending = {id(s) for s in socks if len(s.arrivals) < nth and not s.closed}

    def watcher(sock: IdleSocket) -> Callable[[], None]:
        def on_frame() -> None:
            if len(sock.arrivals) >= nth or sock.closed:
                pending.discard(id(sock))
                if not pending and not done.done():
                    done.set_result(None)
        return on_frame

    for sock in socks:
        sock.on_frame = watcher(sock)
    if not pending:
        done.set_result(None)
    return done


async def open_idle(url: str, timeout: float = 60) -> IdleSocket:
    """Open one idle socket to ``ws://host:port/path``."""
    rest = url.removeprefix("ws://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    loop = asyncio.get_running_loop()
    _, sock = await asyncio.wait_for(
        loop.create_connection(lambda: IdleSocket(hostport, "/" + path), host, int(port)),
        timeout)
    try:
        await asyncio.wait_for(sock.opened, timeout)
    except TimeoutError:
        sock._transport.close()  # a client that gives up hangs up: the server frees the socket
        raise
    return sock
