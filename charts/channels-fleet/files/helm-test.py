"""`helm test`: every component answers /readyz, and a WebSocket makes a round trip through the
interface Service to a worker's consumer and back. Standard library only (runs in the interface
image); a failure prints what failed and exits 1.

    python3 helm-test.py --websocket HOST:PORT --path /ws/chat/helm-test/ --host localhost \
        --send '{"type": "status"}' --expect '"type": "status"' --metrics-port 9100 SERVICE...
"""

import argparse
import base64
import os
import socket
import struct
import sys
import time
import urllib.request

TIMEOUT = 15.0


def readyz(services: list[str], port: int) -> int:
    """GET /readyz on every address of every (headless) metrics Service; count the failures."""
    failed = 0
    for service in services:
        try:
            addresses = sorted({a[4][0] for a in socket.getaddrinfo(service, port)})
        except OSError as exc:
            print(f"FAIL {service}: no address ({exc})")
            failed += 1
            continue
        for ip in addresses:
            url = f"http://{ip}:{port}/readyz"
            try:
                status = urllib.request.urlopen(url, timeout=5).status
            except Exception as exc:  # an HTTP error or a refused connection alike
                status = exc
            print(f"{'ok  ' if status == 200 else 'FAIL'} {service} {url} {status}")
            failed += status != 200
    return failed


class WebSocket:
    """The client side of RFC 6455, just enough for one text round trip."""

    def __init__(self, address: str, path: str, host: str) -> None:
        name, _, port = address.rpartition(":")
        self.sock = socket.create_connection((name, int(port)), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status + " ":
            raise RuntimeError(f"handshake refused: {status}")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed by the server")
        self.buffer += chunk

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def receive(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._read(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._read(8))
        mask = self._read(4) if second & 0x80 else b""
        data = self._read(size)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return first & 0x0F, data

    def close(self) -> None:
        try:
            self.send(0x8, struct.pack("!H", 1000))
        finally:
            self.sock.close()


def round_trip(args: argparse.Namespace) -> bool:
    t0 = time.monotonic()
    ws = WebSocket(args.websocket, args.path, args.host)
    try:
        ws.send(0x1, args.send.encode())
        deadline = t0 + TIMEOUT
        while time.monotonic() < deadline:
            opcode, data = ws.receive()
            if opcode == 0x8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                print(f"FAIL websocket {args.path}: closed by the server with {code}")
                return False
            if opcode == 0x9:
                ws.send(0xA, data)
            elif opcode == 0x1 and args.expect in data.decode(errors="replace"):
                ms = (time.monotonic() - t0) * 1000
                reply = data.decode()[:120]
                print(f"ok   websocket {args.websocket}{args.path}: {reply} ({ms:.0f} ms)")
                return True
        print(f"FAIL websocket {args.path}: no reply containing {args.expect!r} in {TIMEOUT:g} s")
        return False
    finally:
        ws.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--websocket", help="HOST:PORT of the interface Service")
    parser.add_argument("--path", default="/")
    parser.add_argument("--host", default="localhost", help="Host and Origin header")
    parser.add_argument("--send", default="")
    parser.add_argument("--expect", default="")
    parser.add_argument("--metrics-port", type=int, default=9100)
    parser.add_argument("services", nargs="*", help="metrics Services to ask /readyz")
    args = parser.parse_args()
    failed = readyz(args.services, args.metrics_port)
    if args.websocket:
        try:
            failed += not round_trip(args)
        except (OSError, RuntimeError) as exc:
            print(f"FAIL websocket {args.websocket}{args.path}: {exc}")
            failed += 1
    print("helm test:", "passed" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
