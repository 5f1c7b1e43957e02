"""Prometheus metrics for the gunicorn web tier, in prometheus-client's multiprocess mode.

gunicorn runs several worker processes; each writes its metric values to files under
``PROMETHEUS_MULTIPROC_DIR`` and a ``ProbeServer`` adds them up at every scrape
(``MultiProcessCollector``). Wiring, in the gunicorn master (``services/web.py``):

    from channels_fleet.observability import web as web_metrics
    web_metrics.setup_multiprocess()                 # FIRST: before prometheus_client is imported
    cfg.set("child_exit", web_metrics.child_exit)    # a dead worker's live gauges stop counting
    app = web_metrics.instrument_wsgi(django_wsgi_app)   # in load(): requests by method/status

and serve ``ProbeServer(..., component="web")`` from a small process the master starts
(``services/web.py`` does; a thread in the master would be forked into the workers with whatever
locks it holds). The ProbeServer switches to the multiprocess collector by itself when
``PROMETHEUS_MULTIPROC_DIR`` is set.

This module imports prometheus_client lazily: prometheus_client picks its storage (memory or
files) when it is first imported, so the directory must be set before that.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class MultiprocessSetupError(RuntimeError):
    """prometheus_client was imported before the multiprocess directory was set."""


def setup_multiprocess(path: str | None = None) -> str:
    """Use (and wipe) ``path``, ``$PROMETHEUS_MULTIPROC_DIR`` or a new temporary directory.

    Wiping at start matters: files left by a previous run's processes would be summed in.
    Returns the directory; sets ``PROMETHEUS_MULTIPROC_DIR`` for this process and its children.
    """
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass.__name__ == "MutexValue":
        # The value class is chosen once, at import: too late to switch this process to files.
        raise MultiprocessSetupError(
            "prometheus_client was imported before web_metrics.setup_multiprocess(); "
            f"call it first in the gunicorn master, or set {ENV} in the environment"
        )
    chosen = path or os.environ.get(ENV) or tempfile.mkdtemp(prefix="channels-fleet-prom-")
    directory = Path(chosen)
    directory.mkdir(parents=True, exist_ok=True)
    removed = 0
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
        removed += 1
    os.environ[ENV] = str(directory)
    # Imported here, now that the directory is set, not first in child_exit: gunicorn runs
    # that hook from its SIGCHLD handler, and a second worker's exit interrupting the first
    # import re-entered the half-imported package (ImportError, the master died with exit 1).
    from prometheus_client import multiprocess  # noqa: F401

    logger.info("prometheus multiprocess dir %s (%d stale files removed)", directory, removed)
    return str(directory)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook: drop the dead worker's live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def instrument_wsgi(app: WSGIApp, metrics: Any = None) -> WSGIApp:
    """Wrap a WSGI app: count requests by method and status class, time them until the body
    has been sent (streaming responses included)."""
    from .metrics import METRICS, method_label, status_class

    m = metrics if metrics is not None else METRICS

    def record(method: str, status: int, started: float) -> None:
        m.web_requests.labels(method, status_class(status)).inc()
        m.web_request_duration.labels(method).observe(time.perf_counter() - started)

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        method = method_label(environ.get("REQUEST_METHOD", ""))
        seen: list[int] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen.append(int(status.split(" ", 1)[0]))
            return start_response(status, headers, exc_info)

        try:
            body = app(environ, capture)
        except BaseException:
            record(method, 500, started)
            raise
        return _Body(body, lambda: record(method, seen[-1] if seen else 500, started))

    return wrapped


class _Body:
    """The app's response iterable, recording the request once it is closed (PEP 3333)."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()
