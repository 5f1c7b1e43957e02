"""What the relay's polling loops (peer watch, worker room) share."""

from __future__ import annotations

import asyncio


def stop_requested() -> bool:
    """Whether the running task was asked to stop (cancelled).

    redis-py (8.2) can swallow the CancelledError of a cancel that lands inside a command; the
    request stays counted (``Task.cancelling``), so a loop that checks this ends at its next
    turn instead of polling on, with its ``stop()`` waiting for it forever (seen in a test,
    about 1 run in 30).
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
