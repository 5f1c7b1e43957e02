"""files/helm-test.py, the `helm test` pod's script, against real servers: it passes only when
every /readyz answers 200 and the WebSocket reply holds the expected text."""

from __future__ import annotations

import asyncio
import http.server
import logging
import subprocess
import sys
import threading

import pytest
from websockets.asyncio.server import serve

from .helm import SOURCE_CHART

SCRIPT = SOURCE_CHART / "files" / "helm-test.py"


class Readyz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def websocket_server(reply: str | None, ready: threading.Event, box: dict) -> None:
    """A WebSocket server on a free port: answers each text frame with `reply`, or closes 1011."""

    async def handler(ws):
        box["origin"] = ws.request.headers.get("Origin")
        box["host"] = ws.request.headers.get("Host")
        async for message in ws:
            box["received"] = message
            if reply is None:
                await ws.close(1011)
                return
            await ws.send(reply)

    class Remember(logging.Handler):  # the server's own account of a failed handshake
        def emit(self, record):
            box.setdefault("log", []).append(self.format(record))

    logger = logging.getLogger(f"helm-test-server-{id(box)}")
    logger.addHandler(Remember())

    async def main():
        async with serve(handler, "127.0.0.1", 0, logger=logger) as server:
            box["port"] = server.sockets[0].getsockname()[1]
            box["stop"] = asyncio.get_running_loop().create_future()
            box["loop"] = asyncio.get_running_loop()
            ready.set()
            await box["stop"]

    asyncio.run(main())


@pytest.mark.parametrize(("readyz", "reply", "passes"), [
    (200, '{"type": "status", "worker": "w1"}', True),
    (503, '{"type": "status", "worker": "w1"}', False),
    (200, '{"error": "sign in to post"}', False),
    (200, None, False),  # the consumer raised: closed 1011
], ids=["all-good", "a-pod-unready", "wrong-reply", "closed-1011"])
def test_helm_test_script(readyz, reply, passes):
    Readyz.status = readyz
    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    ready, box = threading.Event(), {}
    ws_thread = threading.Thread(target=websocket_server, args=(reply, ready, box), daemon=True)
    ws_thread.start()
    assert ready.wait(10)
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), f"--websocket=127.0.0.1:{box['port']}",
             "--path=/ws/chat/helm-test/", "--host=localhost", '--send={"type": "status"}',
             '--expect="type": "status"', f"--metrics-port={http_server.server_address[1]}",
             "127.0.0.1"], capture_output=True, text=True, timeout=60)
    finally:
        http_server.shutdown()
        http_server.server_close()
        box["loop"].call_soon_threadsafe(box["stop"].set_result, None)
        ws_thread.join(10)
    print(proc.stdout.strip())
    seen = f"script: {proc.stdout}{proc.stderr}\nserver: {box.get('log')}"
    assert proc.returncode == (0 if passes else 1), seen
    assert box.get("received") == '{"type": "status"}', seen
    assert (box["host"], box["origin"]) == ("localhost", "http://localhost")
