"""Coalesce Channels' per-event database-connection cleanup in a worker process.

Channels 4.2+ awaits ``aclose_old_connections()`` (``sync_to_async(close_old_connections)``)
before every consumer handler. Each call is one hop through asgiref's single thread-sensitive
thread, so a group message reaching a worker's 2,500 consumers queues 2,500 hops that run one
after another before the consumers' ``send``s go out. ``close_old_connections`` only looks at
that thread's connections and is idempotent, so concurrent callers can share one run.

Worker processes call this once at start:

    from channels_fleet.dbcleanup import install
    install()

Then, while one cleanup is queued or running, every new caller waits for the NEXT run (one
run for all of them), never for a run that started before it called: each caller still gets a
cleanup that started after it asked, in the same thread as before. At most one run is in
flight and one waiting per event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from collections.abc import Callable
from typing import Any

from asgiref.sync import AsyncToSync, SyncToAsync, sync_to_async
from django.db import close_old_connections

# Modules that did ``from channels.db import aclose_old_connections`` (checked: channels 4.3.2).
_MODULES = ("channels.db", "channels.consumer", "channels.generic.websocket",
            "channels.generic.http")
_ORIGINAL = "_channels_fleet_original_aclose"


class Coalescer:
    """Shares runs of ``close_old_connections`` among callers of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.runs = 0  # cleanups actually run (for tests and curiosity)
        self._loop = loop
        self._waiting: list[asyncio.Future[None]] | None = None  # callers of the next run
        self._lock = asyncio.Lock()  # one run at a time
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self) -> None:
        # One future per caller (cheaper than shielding a shared one): a cancelled caller
        # cancels only its own, never the run the others wait for.
        waiter = self._loop.create_future()
        if self._waiting is None:
            self._waiting = [waiter]
            task = self._loop.create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._waiting.append(waiter)
        await waiter

    async def _run(self) -> None:
        async with self._lock:
            # From here on this run has started: later callers must wait for the one after.
            waiters, self._waiting = self._waiting or [], None
            self.runs += 1
            try:
                await sync_to_async(close_old_connections)()
            except asyncio.CancelledError:
                for waiter in waiters:
                    waiter.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every caller
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
            else:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)


_coalescers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Coalescer] = (
    weakref.WeakKeyDictionary())
_last: tuple[asyncio.AbstractEventLoop, Coalescer] | None = None  # every call looks it up


def coalescer() -> Coalescer:
    """This event loop's coalescer."""
    global _last
    loop = asyncio.get_running_loop()
    last = _last
    if last is not None and last[0] is loop:
        return last[1]
    found = _coalescers.get(loop)
    if found is None:
        found = _coalescers[loop] = Coalescer(loop)
    _last = (loop, found)
    return found


async def aclose_old_connections() -> None:
    """Drop-in for ``channels.db.aclose_old_connections``, coalesced per event loop."""
    if _thread_is_per_loop():
        await coalescer()()
    else:
        await sync_to_async(close_old_connections)()


def _thread_is_per_loop() -> bool:
    """True when asgiref would pick the same thread for every caller on this loop.

    Under an outer ``async_to_sync`` or a ``ThreadSensitiveContext`` the thread depends on
    the caller, so sharing a run could clean up the wrong thread's connections.
    """
    return (_outer_sync_executor() is None
            and SyncToAsync.thread_sensitive_context.get(None) is None
            and not SyncToAsync.deadlock_context.get(False))


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
    """Replace Channels' ``aclose_old_connections`` where it is looked up; False if done."""
    import importlib

    changed = False
    for name in _MODULES:
        module = importlib.import_module(name)
        current = module.aclose_old_connections
        if current is aclose_old_connections:
            continue
        setattr(module, _ORIGINAL, current)
        module.aclose_old_connections = aclose_old_connections
        changed = True
    return changed


def uninstall() -> None:
    """Undo :func:`install` (for tests)."""
    import importlib

    for name in _MODULES:
        module: Any = importlib.import_module(name)
        original = module.__dict__.pop(_ORIGINAL, None)
        if original is not None:
            module.aclose_old_connections = original


_outer_sync_executor = _executor_probe()
