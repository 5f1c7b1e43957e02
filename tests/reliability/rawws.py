"""Raw WebSocket frames on a TCP socket: what a broken or hostile client sends."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True,
          length: int | None = None) -> bytes:
    """One frame; ``length`` lies about the payload length when given."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def handshake(port: int, path: str, extra: str = "") -> tuple[asyncio.StreamReader,
                                                                    asyncio.StreamWriter, bytes]:
    """Open a WebSocket by hand; returns the streams and the server's response head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: http://127.0.0.1:{port}\r\n{extra}\r\n").encode())
    try:
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    except BaseException:
        await shut(writer)
        raise
    return reader, writer, head


async def shut(writer: asyncio.StreamWriter) -> None:
    """Close a stream and wait for it (no transport left for the loop's teardown)."""
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


async def read_close(reader: asyncio.StreamReader, timeout: float = 10) -> tuple[Any, bytes]:
    """Read frames until the server's close frame or EOF: (close code or None, all bytes)."""
    data = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            data += chunk
            code = close_code(data)
            if code is not None:
                return code, data
    except TimeoutError:
        return close_code(data) or HUNG, data
    except ConnectionError:
        return close_code(data) or RESET, data
    return close_code(data) or RESET, data


RESET = "reset"  # TCP closed or reset before a close frame arrived (what a client calls 1006)
HUNG = "hung"  # nothing at all within the timeout


def close_code(data: bytes) -> int | None:
    """The code of the first close frame in a stream of server frames (unmasked)."""
    i = 0
    while i + 2 <= len(data):
        opcode = data[i] & 0x0F
        n = data[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            if j + 2 > len(data):
                return None
            n = struct.unpack("!H", data[j:j + 2])[0]
            j += 2
        elif n == 127:
            if j + 8 > len(data):
                return None
            n = struct.unpack("!Q", data[j:j + 8])[0]
            j += 8
        if j + n > len(data):
            return None
        if opcode == 0x8:
            return struct.unpack("!H", data[j:j + 2])[0] if n >= 2 else 1005
        i = j + n
    return None
