"""Health probes and Prometheus metrics over a tiny asyncio HTTP/1.1 server.

Every service runs one on its own port (``CHANNELS_FLEET_METRICS_PORT``), never the public one:

    async def readiness() -> tuple[bool, str]:
        return (not draining, "draining" if draining else "ok")

    probes = ProbeServer("0.0.0.0", 9100, readiness=readiness, component="worker")
    await probes.start()
    ...
    await probes.stop()

- ``GET /healthz``: 200 while the event loop answers. The server runs on the service's own loop,
  so a blocked loop means no answer and the kubelet's timeout restarts the pod.
- ``GET /readyz``: 200 or 503, with the readiness reason as the body.
- ``GET /metrics``: the Prometheus exposition of ``registry`` (the default one if None), or of
  every process's files under gunicorn's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).
- Anything else: 404 (405 for a method other than GET/HEAD). Requests are bounded in size and
  time, and a failure answers 500 with one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .metrics import METRICS, FleetMetrics

logger = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[tuple[bool, str]]]

MAX_REQUEST_BYTES = 8192  # request line + headers; probes and scrapers send a few hundred
REQUEST_TIMEOUT = 5.0  # seconds to receive a whole request head
READINESS_TIMEOUT = 2.0  # seconds a readiness check may take before it counts as not ready
MAX_CLIENTS = 64  # concurrent probe connections; more are closed at once

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


async def always_ready() -> tuple[bool, str]:
    """Readiness for a process with nothing to wait for."""
    return True, "ok"


class ProbeServer:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` from the running loop.

    ``component`` ("interface", "worker" or "web"), when given, makes every readiness check
    (on ``/readyz`` and on each scrape of ``/metrics``) also set
    ``channels_fleet_ready{component}`` on ``metrics`` (the default instance if None).
    ``port=0`` picks a free port; read it back from ``.port`` after ``start()``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        readiness: Readiness | None = None,
        registry: CollectorRegistry | None = None,
        *,
        component: str | None = None,
        metrics: FleetMetrics | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness or always_ready
        self.registry = registry if registry is not None else REGISTRY
        self.component = component
        self.metrics = metrics if metrics is not None else METRICS
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and start serving; raises OSError if the port is taken."""
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, limit=MAX_REQUEST_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("probes and metrics on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting and end the connections still open."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def check_ready(self) -> tuple[bool, str]:
        """Run the readiness callable under a deadline; any failure means not ready."""
        try:
            ready, reason = await asyncio.wait_for(self.readiness(), READINESS_TIMEOUT)
        except TimeoutError:
            ready, reason = False, f"readiness check timed out after {READINESS_TIMEOUT:g}s"
        except Exception as exc:  # a probe must answer, whatever the check does
            logger.warning("readiness check failed: %r", exc)
            ready, reason = False, f"readiness check failed: {type(exc).__name__}"
        if self.component is not None:
            self.metrics.ready.labels(self.component).set(1 if ready else 0)
        return bool(ready), str(reason)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._clients) >= MAX_CLIENTS:
            writer.close()
            return
        self._clients.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        except asyncio.LimitOverrunError:
            await _respond(writer, 431, b"request head too large\n")
            return
        except TimeoutError:
            await _respond(writer, 400, b"request head not received in time\n")
            return
        head_only = False
        try:
            method, target, headers = _parse_head(head)
            head_only = method == "HEAD"
            status, body, ctype = await self._route(method, target, headers)
        except _BadRequest as exc:
            status, body, ctype = 400, f"{exc}\n".encode(), "text/plain; charset=utf-8"
        except Exception:
            logger.exception("probe request failed")
            status, body, ctype = 500, b"internal error\n", "text/plain; charset=utf-8"
        await _respond(writer, status, body, ctype, head_only=head_only)

    async def _route(
        self, method: str, target: str, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        text = "text/plain; charset=utf-8"
        path = target.split("?", 1)[0]
        if path not in ("/healthz", "/readyz", "/metrics"):
            return 404, b"not found; try /healthz, /readyz or /metrics\n", text
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", text
        if path == "/healthz":
            return 200, b"ok\n", text
        if path == "/readyz":
            ready, reason = await self.check_ready()
            return (200 if ready else 503), f"{reason}\n".encode(), text
        if self.component is not None:
            await self.check_ready()  # keeps channels_fleet_ready fresh at every scrape
        accept = headers.get("accept", "")
        return await asyncio.to_thread(self._exposition, accept)

    def _exposition(self, accept: str) -> tuple[int, bytes, str]:
        encoder, ctype = choose_encoder(accept)
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and registry is REGISTRY:
            # Multiprocess mode: every worker process writes its own files; add them up.
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return 200, encoder(registry), ctype


class _BadRequest(Exception):
    """The request line or a header could not be parsed."""


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _BadRequest("malformed request line") from None
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        raise _BadRequest("malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest("malformed header line")
        headers[name.strip().lower()] = value.strip()
    return method.upper(), target, headers


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    ctype: str = "text/plain; charset=utf-8",
    *,
    head_only: bool = False,
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    writer.write(head if head_only else head + body)
    await writer.drain()
