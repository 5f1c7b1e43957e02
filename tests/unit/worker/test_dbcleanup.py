"""Owed ``aclose_old_connections``: obsolete connections still closed before the next
database use, without the handler waiting for the cleanup or a thread hop per event."""

from __future__ import annotations

import asyncio
import threading

import pytest
from support.bindingapp.djangosetup import setup

setup()

from asgiref.sync import SyncToAsync, async_to_sync, sync_to_async  # noqa: E402
from django.db import connection  # noqa: E402

from channels_fleet.worker import dbcleanup  # noqa: E402

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def installed():
    dbcleanup.install()
    yield
    dbcleanup.uninstall()


@sync_to_async
def open_connection() -> str:
    """Open the thread-sensitive thread's connection (CONN_MAX_AGE=0: obsolete at once)."""
    connection.ensure_connection()
    return threading.current_thread().name


@sync_to_async
def is_open() -> bool:
    return connection.connection is not None


async def test_obsolete_connection_is_closed_before_the_next_database_use(installed):
    await open_connection()
    await dbcleanup.aclose_old_connections()
    assert not await is_open()  # the next job on the same thread runs after the cleanup


async def test_the_handler_does_not_wait_for_the_cleanup(installed):
    """The thread is busy with another consumer's database work: the caller goes on at once,
    and the cleanup runs before the caller's own next job."""
    await open_connection()
    release = threading.Event()
    busy = asyncio.ensure_future(sync_to_async(release.wait)())
    await asyncio.sleep(0.05)  # the blocker occupies the thread
    await dbcleanup.aclose_old_connections()
    assert not busy.done()  # returned while the thread was still busy
    release.set()
    await busy
    assert not await is_open()


async def test_concurrent_callers_share_runs(installed):
    await sync_to_async(lambda: None)()  # nothing owed
    before = dbcleanup.CLEANUP.runs
    release = threading.Event()
    busy = asyncio.ensure_future(sync_to_async(release.wait)())
    await asyncio.sleep(0.05)
    for _ in range(500):
        await dbcleanup.aclose_old_connections()
    release.set()
    await busy
    await sync_to_async(lambda: None)()  # after the owed cleanup
    assert dbcleanup.CLEANUP.runs - before == 1


async def test_every_caller_gets_a_run_started_after_it_called(installed):
    """A connection opened after a run was owed is closed for the caller that came next."""
    await dbcleanup.aclose_old_connections()
    await open_connection()  # pays the owed cleanup, then opens
    await dbcleanup.aclose_old_connections()
    assert not await is_open()


async def test_no_database_job_for_a_while__the_owed_cleanup_runs_anyway(installed, monkeypatch):
    """Events that never touch the database still get obsolete connections closed: at most
    FORCE_EVERY_S after one is owed, a job of its own pays it; in between, none is queued."""
    await open_connection()
    monkeypatch.setattr(dbcleanup.CLEANUP, "forced_at", 0.0)
    before = dbcleanup.CLEANUP.runs
    await dbcleanup.aclose_old_connections()  # forced: none for over FORCE_EVERY_S
    await asyncio.sleep(0.2)
    assert dbcleanup.CLEANUP.runs == before + 1 and not dbcleanup.CLEANUP.owed
    assert not await is_open()
    await dbcleanup.aclose_old_connections()  # within FORCE_EVERY_S: owed, not queued
    await asyncio.sleep(0.2)
    assert dbcleanup.CLEANUP.runs == before + 1 and dbcleanup.CLEANUP.owed


async def test_a_failing_cleanup_is_logged_not_raised(installed, caplog, monkeypatch):
    def broken() -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(dbcleanup, "close_old_connections", broken)
    await dbcleanup.aclose_old_connections()
    assert await sync_to_async(lambda: "the job after it ran")() == "the job after it ran"
    assert "database went away" in caplog.text


async def test_not_installed__channels_own_awaited_hop():
    """Without the executor that pays it, nothing would: the cleanup is awaited as Channels'."""
    await open_connection()
    await dbcleanup.aclose_old_connections()
    assert not dbcleanup.CLEANUP.owed
    assert not await is_open()


def test_install_replaces_the_names_channels_looks_up():
    import channels.consumer
    import channels.db
    import channels.generic.websocket

    original = SyncToAsync.single_thread_executor
    try:
        assert dbcleanup.install()
        assert not dbcleanup.install()
        for module in (channels.db, channels.consumer, channels.generic.websocket):
            assert module.aclose_old_connections is dbcleanup.aclose_old_connections
        assert isinstance(SyncToAsync.single_thread_executor, dbcleanup.CleaningExecutor)
    finally:
        dbcleanup.uninstall()
    assert channels.consumer.aclose_old_connections is not dbcleanup.aclose_old_connections
    assert SyncToAsync.single_thread_executor is original


def test_under_async_to_sync_it_falls_back_to_the_callers_thread(installed):
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
