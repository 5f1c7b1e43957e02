"""Channels' per-event database-connection cleanup, queued instead of awaited, in a worker.

Channels 4.2+ awaits ``aclose_old_connections()`` (``sync_to_async(close_old_connections)``)
before every consumer handler: one hop through asgiref's single thread-sensitive thread, and the
handler waits for it. A group message reaching a worker's 2,500 consumers queued 2,500 hops one
after another before their ``send``s went out, and every handler also waited behind whatever
database work the other consumers had queued on that thread.

``close_old_connections`` only touches that thread's connections, and every later use of them
(``database_sync_to_async``, Django's async ORM, ``sync_to_async``) is another job on the same
single-thread executor, which runs its jobs in order. So submitting the cleanup to that thread
is enough: it runs before anything the handler then asks of the database, as Channels intends,
and the handler does not wait for it. While one cleanup is queued and not yet started, new
callers share it (it still starts after they asked); a failure is logged, not raised into the
handler. Where asgiref would pick another thread (under ``async_to_sync``, a
``ThreadSensitiveContext``, a loop started by ``async_to_sync``), Channels' own awaited hop is
used unchanged.

Worker processes call this once at start:

    from channels_fleet.worker.dbcleanup import install
    install()
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from asgiref.sync import AsyncToSync, SyncToAsync, sync_to_async
from django.db import close_old_connections

from . import patching

logger = logging.getLogger(__name__)

# Modules that did ``from channels.db import aclose_old_connections`` (checked: channels 4.3.2).
_MODULES = ("channels.db", "channels.consumer", "channels.generic.websocket",
            "channels.generic.http")


class Cleanup:
    """At most one ``close_old_connections`` queued (not yet started) on the thread."""

    def __init__(self) -> None:
        self.queued = False
        self.runs = 0  # cleanups actually run (for tests and curiosity)

    def request(self) -> None:
        # A run that is queued but not started will start after this caller asked: share it.
        # (``queued`` is cleared by the thread as the run starts; a stale True read here means
        # it started just now, which is still after the ask.)
        if self.queued:
            return
        self.queued = True
        future = SyncToAsync.single_thread_executor.submit(self._run)
        future.add_done_callback(_report_failure)

    def _run(self) -> None:
        self.queued = False
        self.runs += 1
        close_old_connections()


CLEANUP = Cleanup()


def _report_failure(future: Future[None]) -> None:
    exc = future.exception()
    if exc is not None:
        logger.warning("close_old_connections failed: %r", exc)


async def aclose_old_connections() -> None:
    """Drop-in for ``channels.db.aclose_old_connections``: queued on the thread, not awaited."""
    if _single_thread_is_used():
        CLEANUP.request()
    else:
        await sync_to_async(close_old_connections)()


def _single_thread_is_used() -> bool:
    """True when asgiref's ``sync_to_async`` would run here on its single shared thread.

    Under an outer ``async_to_sync``, a ``ThreadSensitiveContext`` or a loop that
    ``async_to_sync`` started, the thread depends on the caller: use Channels' own hop there.
    """
    return (_outer_sync_executor() is None
            and SyncToAsync.thread_sensitive_context.get(None) is None
            and not SyncToAsync.deadlock_context.get(False)
            and (not AsyncToSync.loop_thread_executors
                 or asyncio.get_running_loop() not in AsyncToSync.loop_thread_executors))


def _executor_probe() -> Callable[[], Any]:
    """A cheap ``AsyncToSync.executors.current``.

    The public read goes through asgiref's ``Local`` (a lock and two raised AttributeErrors
    when unset): a tenth of a worker's time in a broadcast. asgiref 3.9+ keeps the values in
    one ContextVar tagged with the owning thread; read that when it is there.
    """
    local = AsyncToSync.executors
    var = getattr(getattr(local, "_storage", None), "_data", None)
    if not isinstance(var, contextvars.ContextVar):
        return lambda: getattr(local, "current", None)

    def current() -> Any:
        storage = var.get(None)
        if storage is None or getattr(storage, "thread_id", None) != threading.get_ident():
            return None
        return storage.data.get("current")

    return current


def install() -> bool:
    """Use this ``aclose_old_connections`` where Channels looks it up; False if done already."""
    return patching.replace(_MODULES, "aclose_old_connections", aclose_old_connections)


def uninstall() -> None:
    """Undo :func:`install` (for tests)."""
    patching.restore(_MODULES, "aclose_old_connections")


_outer_sync_executor = _executor_probe()
