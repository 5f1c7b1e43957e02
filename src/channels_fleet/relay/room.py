"""Whether any worker has room for a new connection, read from the workers' heartbeats.

A worker's heartbeat carries its status (``observability/status.py``): the connections it
owns (``sockets``), its cap (``concurrency``), how long it has taken nothing for want of room
(``full_for``) and whether it drains; and it lists its channel in ``wire.workers_key``, scored
with its heartbeat's expiry (``heartbeat.py``). An interface reads them twice per heartbeat
interval (one ZRANGEBYSCORE and one MGET, both in the slot ``{hb}``). When workers are known
and every one drains or has been full for ``full_after`` (a heartbeat interval), none takes
a connect envelope until a slot frees, and an envelope sent then would wait out the claim
timeout: the interface refuses new connections at once instead (``interface/claims.py``).
A worker full for a moment (short HTTP requests at the cap come and go) does not count.

A worker whose heartbeat lapsed less than ``lapsed_unknown_for`` ago is unknown, not gone: its
beats may be failing while the heartbeats' shard fails over or is handed over (a node drain),
and its peers' beats with it, at different moments. Counting only the workers still listed
then reads "every worker drains" from the one draining worker whose key happened to outlive
the others', and refuses connects the others have room for.

    room = WorkerRoom(redis, prefix="fleet", interval=0.5, full_after=1.0)
    task = asyncio.create_task(room.keep_reading())
    room.full       # True: every live worker is full

A status is at most one beat old and read every half beat, so a connect may still be refused
up to 1.5 beats after a worker freed a slot, or sent to wait while the last slots fill.
Unknown is never full: no worker listed (none started yet, or all of an older release), a
worker whose heartbeat lapsed lately, a status without ``full_for``, or Redis not answering.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from ..exceptions import RedisPermissionError
from ..layers import acl
from .polling import stop_requested
from .wire import heartbeat_key, workers_key

logger = logging.getLogger(__name__)

#: Longer than the heartbeats' shard takes to fail over (node timeout and election) and a
#: beat to find its new master: a worker cut off longer is taken for gone (a crash, whose
#: listing stays until the next worker registers).
LAPSED_UNKNOWN_FOR = 30.0


def takes_none(status: Any, full_after: float) -> bool:
    """Does this worker status say it takes no new connection: draining, or full (at its
    cap) for ``full_after`` seconds?"""
    if not isinstance(status, dict):
        return False
    if status.get("draining") is True:
        return True
    full_for = status.get("full_for")
    if isinstance(full_for, bool) or not isinstance(full_for, int | float):
        return False
    return full_for >= full_after


def _status(value: bytes | str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return None


class WorkerRoom:
    """Keeps ``full`` up to date from the live workers' heartbeats (``redis``: an asyncio
    redis-py client, single or cluster)."""

    def __init__(self, redis: Any, *, prefix: str, interval: float, full_after: float,
                 lapsed_unknown_for: float = LAPSED_UNKNOWN_FOR, url: str = "") -> None:
        self.redis = redis
        self.url = url  # names the server in an ACL refusal
        self._refused: str | None = None
        self.prefix = prefix
        self.interval = interval
        self.full_after = full_after
        self.lapsed_unknown_for = lapsed_unknown_for
        #: Every known worker takes no new connection (see the module's docstring).
        self.full = False
        self.workers = 0  # live workers found at the last read

    async def read(self) -> bool:
        """Read the workers' statuses now; returns (and sets) ``full``."""
        since_ms = int((time.time() - self.lapsed_unknown_for) * 1000)
        with acl.naming(self.url, "ZRANGEBYSCORE", workers_key(self.prefix)):
            channels = await self.redis.zrangebyscore(workers_key(self.prefix), since_ms,
                                                      "+inf")
        with acl.naming(self.url, "MGET", heartbeat_key("*", self.prefix)):
            values = await self.redis.mget(
                [heartbeat_key(c.decode() if isinstance(c, bytes) else c, self.prefix)
                 for c in channels]) if channels else []
        statuses = [_status(v) for v in values if v is not None]
        lapsed = len(values) - len(statuses)  # unknown: they may have room
        full = (bool(statuses) and not lapsed
                and all(takes_none(s, self.full_after) for s in statuses))
        if full != self.full:
            if full:
                logger.warning("all %d workers are full (at their concurrency cap) or draining: "
                               "new connections are refused (1013 / 503) until one has room",
                               len(statuses))
            else:
                logger.info("workers have room again: taking new connections")
        self.full, self.workers = full, len(statuses)
        return full

    async def keep_reading(self) -> None:
        """Read every ``interval`` until cancelled."""
        while not stop_requested():
            try:
                await self.read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Unknown is never full: the connects go out and the claim timeout bounds them.
                if self.full:
                    logger.warning("worker room unknown (%r): taking new connections", exc)
                elif isinstance(exc, RedisPermissionError) and str(exc) != self._refused:
                    logger.warning("worker room unknown: %s", exc)  # once, not every turn
                    self._refused = str(exc)
                self.full = False
            await asyncio.sleep(self.interval)
