"""Channels' per-event database-connection cleanup, owed instead of awaited, in a worker.

Channels 4.2+ awaits ``aclose_old_connections()`` (``sync_to_async(close_old_connections)``)
before every consumer handler: one hop through asgiref's single thread-sensitive thread, and the
handler waits for it. A group message reaching a worker's 2,500 consumers queued 2,500 hops one
after another before their ``send``s went out; even queued and not awaited, one hop per event
was a fifth of a worker's CPU in an echo (docs/benchmarks.md).

``close_old_connections`` only touches that thread's connections, and every later use of them
(``database_sync_to_async``, Django's async ORM, ``sync_to_async``) is a job on the same
single-thread executor. So the handler only records that a cleanup is owed, and that executor
(replaced by :func:`install` with one that does this) runs an owed cleanup on its thread before
the next job it starts: before anything a handler then asks of the database, as Channels
intends, and once for every event that came since. While events come, a cleanup is also queued
at most once per ``FORCE_EVERY_S``, so an obsolete connection of a thread that nobody uses for
a while is still closed (Channels closes it at the next event). A failing cleanup is logged,
not raised into the job after it. Where asgiref would pick another thread (under
``async_to_sync``, a ``ThreadSensitiveContext``, a loop started by ``async_to_sync``), Channels'
own awaited hop is used unchanged.

Worker processes call this once at start, before any database work:

    from channels_fleet.worker.dbcleanup import install
    install()
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import AsyncToSync, SyncToAsync, sync_to_async
from django.db import close_old_connections

from . import patching

logger = logging.getLogger(__name__)

# Modules that did ``from channels.db import aclose_old_connections`` (checked: channels 4.3.2).
_MODULES = ("channels.db", "channels.consumer", "channels.generic.websocket",
            "channels.generic.http")
FORCE_EVERY_S = 1.0  # while events come, an owed cleanup waits at most this for a job


class Cleanup:
    """Whether a ``close_old_connections`` is owed on the single thread (set by handlers on
    the event loop, paid by the thread before its next job)."""

    def __init__(self) -> None:
        self.owed = False
        self.forced_at = 0.0
        self.runs = 0  # cleanups actually run (for tests and curiosity)

    def request(self, executor: ThreadPoolExecutor) -> None:
        self.owed = True
        now = time.monotonic()
        if now - self.forced_at >= FORCE_EVERY_S:
            self.forced_at = now
            executor.submit(_nothing)  # the executor pays what is owed first

    def pay(self) -> None:
        """On the thread, before a job: run the owed cleanup. (Cleared before it runs: a
        handler that asks meanwhile gets the next job's run, which starts after it asked.)"""
        if not self.owed:
            return
        self.owed = False
        self.runs += 1
        try:
            close_old_connections()
        except Exception as exc:
            logger.warning("close_old_connections failed: %r", exc)


CLEANUP = Cleanup()


def _nothing() -> None:
    pass


class CleaningExecutor(ThreadPoolExecutor):
    """asgiref's single-thread executor that pays an owed cleanup before each job."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="sync-to-async")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return super().submit(_after_cleanup, fn, args, kwargs)


def _after_cleanup(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    CLEANUP.pay()
    return fn(*args, **kwargs)


_EXECUTOR = CleaningExecutor()


async def aclose_old_connections() -> None:
    """Drop-in for ``channels.db.aclose_old_connections``: owed on the thread, not awaited."""
    executor = SyncToAsync.single_thread_executor
    if executor is _EXECUTOR and _single_thread_is_used():
        CLEANUP.request(executor)
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


_replaced: list[ThreadPoolExecutor] = []


def install() -> bool:
    """Use this ``aclose_old_connections`` where Channels looks it up, and the executor that
    pays it as asgiref's single thread; False if done already."""
    if SyncToAsync.single_thread_executor is not _EXECUTOR:
        _replaced.append(SyncToAsync.single_thread_executor)
        SyncToAsync.single_thread_executor = _EXECUTOR
    return patching.replace(_MODULES, "aclose_old_connections", aclose_old_connections)


def uninstall() -> None:
    """Undo :func:`install` (for tests)."""
    patching.restore(_MODULES, "aclose_old_connections")
    if _replaced:
        SyncToAsync.single_thread_executor = _replaced.pop()


_outer_sync_executor = _executor_probe()
