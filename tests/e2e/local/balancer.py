"""A readiness-aware TCP balancer: what a Kubernetes Service (or an Ingress) does for the tests.

Each new client connection goes, round robin, to a backend whose readiness probe (``/readyz``
on its metrics port) answers 200 right now; a backend that is draining (503) or gone gets no
new connection, as a pod that fails readiness leaves the Service's endpoints. Bytes are piped
both ways untouched, so WebSocket close frames and codes reach the client as the backend sent
them; when a backend closes, the client's side is closed too.

It runs its own event loop in a daemon thread, so a module-scoped stack does not depend on
the test's event loop. ``backends`` is replaced, never mutated in place, so the loop thread
always sees a whole list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    """One interface process: where it serves clients and where its probes are."""

    name: str
    port: int
    probe_port: int

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/readyz",
                                        timeout=1) as resp:
                return resp.status == 200
        except (OSError, urllib.error.HTTPError):
            return False


class Balancer:
    """Listens on a free loopback port; ``start()`` returns it, ``stop()`` closes everything."""

    def __init__(self) -> None:
        self.backends: Sequence[Backend] = ()
        self.port = 0
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="balancer",
                                        daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> int:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _pick(self) -> Backend | None:
        backends = self.backends
        for _ in range(2 * len(backends)):
            self._next = (self._next + 1) % len(backends)
            backend = backends[self._next]
            if await asyncio.to_thread(backend.ready):
                return backend
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = await self._pick()
        if backend is None:
            logger.info("no ready backend: connection refused")
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend.port)
        except OSError as exc:
            logger.info("backend %s unreachable: %s", backend.name, exc)
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        with contextlib.suppress(asyncio.CancelledError):  # stop() cancels open pipes
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
