"""run_sync: layer coroutines from sync code, on the right loop for each kind of caller."""

from __future__ import annotations

import asyncio
import threading

from asgiref.sync import sync_to_async

from channels_fleet.bridge import run_sync


async def where() -> tuple[asyncio.AbstractEventLoop, str]:
    return asyncio.get_running_loop(), threading.current_thread().name


async def test_plain_thread__one_background_loop_reused():
    first, second = await asyncio.to_thread(lambda: (run_sync(where), run_sync(where)))
    assert first == second  # same loop, same thread: the layer's connections are kept
    assert first[1] == "channels-fleet-bridge"
    assert first[0] is not asyncio.get_running_loop()


async def test_sync_to_async_thread__runs_on_the_calling_loop():
    loop, _ = await sync_to_async(run_sync)(where)
    assert loop is asyncio.get_running_loop()


async def test_inside_running_loop__scheduled_not_blocking():
    ran = asyncio.Event()

    async def mark():
        ran.set()

    assert run_sync(mark) is None
    await asyncio.wait_for(ran.wait(), 1)


def test_result_and_errors_come_back():
    async def boom():
        raise ValueError("no")

    async def answer():
        return 42

    assert run_sync(answer) == 42
    try:
        run_sync(boom)
    except ValueError as exc:
        assert str(exc) == "no"
    else:
        raise AssertionError("the coroutine's error was lost")
