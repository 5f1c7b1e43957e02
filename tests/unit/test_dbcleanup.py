"""Coalesced ``aclose_old_connections``: obsolete connections still closed, far fewer hops."""

from __future__ import annotations

import asyncio
import threading

import pytest
from bindingapp.djangosetup import setup

setup()

from asgiref.sync import async_to_sync, sync_to_async  # noqa: E402
from django.db import connection  # noqa: E402

from channels_fleet import dbcleanup  # noqa: E402

pytestmark = pytest.mark.timeout(30)


@sync_to_async
def open_connection() -> str:
    """Open the thread-sensitive thread's connection (CONN_MAX_AGE=0: obsolete at once)."""
    connection.ensure_connection()
    return threading.current_thread().name


@sync_to_async
def is_open() -> bool:
    return connection.connection is not None


async def test_obsolete_connection_is_closed():
    await open_connection()
    assert await is_open()
    await dbcleanup.aclose_old_connections()
    assert not await is_open()


async def test_concurrent_callers_share_runs():
    cleaner = dbcleanup.coalescer()
    before = cleaner.runs
    await asyncio.gather(*(dbcleanup.aclose_old_connections() for _ in range(500)))
    runs = cleaner.runs - before
    assert 1 <= runs <= 3, runs


async def test_every_caller_gets_a_run_started_after_it_called():
    """A connection opened while a run is in flight is closed for the caller that came next."""
    await open_connection()
    first = asyncio.ensure_future(dbcleanup.aclose_old_connections())
    await asyncio.sleep(0)  # the first run is queued or running
    await open_connection()  # runs after the first cleanup (same single thread)
    await dbcleanup.aclose_old_connections()
    await first
    assert not await is_open()


async def test_cancelled_caller_does_not_cancel_the_shared_run():
    await open_connection()
    victim = asyncio.ensure_future(dbcleanup.aclose_old_connections())
    other = asyncio.ensure_future(dbcleanup.aclose_old_connections())
    await asyncio.sleep(0)
    victim.cancel()
    await other
    assert not await is_open()


def test_install_replaces_the_names_channels_looks_up():
    import channels.consumer
    import channels.db
    import channels.generic.websocket

    try:
        assert dbcleanup.install()
        assert not dbcleanup.install()
        for module in (channels.db, channels.consumer, channels.generic.websocket):
            assert module.aclose_old_connections is dbcleanup.aclose_old_connections
    finally:
        dbcleanup.uninstall()
    assert channels.consumer.aclose_old_connections is not dbcleanup.aclose_old_connections


def test_under_async_to_sync_it_falls_back_to_the_callers_thread():
    """Inside async_to_sync the cleanup runs in the outer sync thread, as Channels' does."""
    connection.ensure_connection()  # this (outer, sync) thread's connection

    async def clean() -> None:
        await dbcleanup.aclose_old_connections()

    async_to_sync(clean)()
    assert connection.connection is None


def test_executor_probe_agrees_with_asgiref():
    from asgiref.sync import AsyncToSync

    async def both() -> tuple[object, object]:
        return dbcleanup._outer_sync_executor(), getattr(AsyncToSync.executors, "current", None)

    fast, public = async_to_sync(both)()
    assert fast is public and fast is not None


async def test_executor_probe_outside_async_to_sync():
    from asgiref.sync import AsyncToSync

    assert dbcleanup._outer_sync_executor() is None
    assert getattr(AsyncToSync.executors, "current", None) is None
