"""The WebSockets of a draining interface (docs/design/resume-server.md §4.4): each one told to
go, at the pace of ``close_pacing``: a resumable session's with ``B`` (its client resumes on
another interface, which supersedes this socket: 4001), any other with a 1001 close. A B'd
socket still open when the wait for its resume is over is closed 1001 too (its owner gets
DETACH: the client may still resume).

    closed = await drain_sockets(sockets, rate, timeout, until, send_back=..., end=...)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .client import CLAIMED, ClientConn
from .limits import close_pacing

logger = logging.getLogger(__name__)

#: How often a drain looks whether its B'd sockets were resumed elsewhere (a drain only).
POLL_S = 0.05


async def drain_sockets(sockets: list[ClientConn], rate: float, timeout: float, until: float, *,
                        send_back: Callable[[ClientConn], Awaitable[bool]],
                        end: Callable[[ClientConn, int], Awaitable[None]]) -> int:
    """Tell ``sockets`` to go, in batches ``close_pacing`` spaces out so that their clients do
    not all come back in the same instant: ``send_back`` (False: not a session socket, ``end``
    it with 1001). Then wait, up to the loop's time ``until``, for the B'd ones to be resumed
    elsewhere and end those left. Returns the sockets closed with 1001."""
    backs: list[ClientConn] = []
    batch, pause = close_pacing(len(sockets), rate, timeout)
    for start in range(0, len(sockets), batch):
        if start:
            await asyncio.sleep(pause)
        for conn in sockets[start:start + batch]:
            if await send_back(conn):
                backs.append(conn)
            else:
                await end(conn, 1001)
    left = await resumed_elsewhere(backs, until)
    if backs:
        logger.info("drain: %d sessions sent B, %d still open at the end (closed 1001)",
                    len(backs), len(left))
    for conn in left:
        await end(conn, 1001)
    return len(sockets) - len(backs) + len(left)


async def resumed_elsewhere(backs: list[ClientConn], until: float) -> list[ClientConn]:
    """Wait until every socket sent ``B`` is gone (superseded by its resume elsewhere, or
    lost), or the loop's time ``until``: the ones still open then."""
    loop = asyncio.get_running_loop()
    while True:
        left = [conn for conn in backs if conn.state in CLAIMED]
        if not left or loop.time() >= until:
            return left
        await asyncio.sleep(min(POLL_S, until - loop.time()))
