"""The peer watch: which of the processes this one shares connections with have died.

Every ``interval`` (half a heartbeat interval in ``RedisLiveness``) one MGET reads the heartbeat
keys of this process's peers (they share the hash tag ``{hb}``, so one MGET does on a Redis
Cluster too); a peer whose key is missing is declared dead with a tombstone
(``tombstones.py``), unless this process itself could not reach Redis lately (``trouble.py``):
then its peers may merely not have beaten again yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import RedisPermissionError
from ..layers import acl
from .polling import stop_requested
from .tombstones import DECLARE, TOMBSTONE_MS
from .trouble import TROUBLE
from .wire import heartbeat_key, tombstone_key

logger = logging.getLogger(__name__)


@dataclass
class PeerWatch:
    """Every ``interval`` seconds, report which peers of this process's connections are dead."""

    client: Any
    peers: Callable[[], Iterable[str]]
    on_dead: Callable[[set[str]], None]
    interval: float = 1.0
    #: After this process could not reach Redis, how long before a missing heartbeat counts
    #: (peers need that long to beat again): the heartbeat's TTL + interval.
    grace: float | None = None
    #: Whether this process is cut off from Redis now (its own beat is late): its peers may be
    #: too, so it judges nobody until it has been back for ``grace``.
    cut_off: Callable[[], bool] = lambda: False
    prefix: str = field(kw_only=True)
    #: The Redis URL the client was made for (names the server in a refusal).
    url: str = field(default="", kw_only=True)
    _last_error: str | None = field(default=None, init=False)
    _healthy_since: float | None = field(default=None, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="peer-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def missing(self, channels: Iterable[str]) -> list[str]:
        """Those of ``channels`` whose heartbeat key is absent."""
        names = list(dict.fromkeys(channels))
        if not names:
            return []
        with acl.naming(self.url, "MGET", heartbeat_key("*", self.prefix)):
            values = await self.client.mget([heartbeat_key(n, self.prefix) for n in names])
        return [name for name, value in zip(names, values, strict=True) if value is None]

    async def declare(self, missing: Iterable[str]) -> set[str]:
        """Declare dead those still without a heartbeat (tombstone); returns them."""
        dead = set()
        for name in missing:
            tombstone = tombstone_key(name, self.prefix)
            with acl.naming(self.url, "EVAL declare (calls EXISTS, SET)", tombstone):
                declared = await self.client.eval(DECLARE, 2, heartbeat_key(name, self.prefix),
                                                  tombstone, TOMBSTONE_MS)
            if declared:
                dead.add(name)
        return dead

    async def _loop(self) -> None:
        self._healthy_since = time.monotonic()
        while not stop_requested():
            await asyncio.sleep(self.interval)
            if self.cut_off():
                TROUBLE.seen()
                continue
            try:
                asked = time.monotonic()
                missing = await self.missing(self.peers())
                if time.monotonic() - asked > self.interval:
                    # The client retried until Redis answered (a failover): the peers could
                    # not beat meanwhile either.
                    TROUBLE.seen()
                grace = self.grace if self.grace is not None else (
                    TROUBLE.grace or 4 * self.interval)
                since = max(self._healthy_since, TROUBLE.at)
                if not missing or time.monotonic() - since < grace:
                    continue  # Redis was away from us lately: the peers may be away too
                dead = await self.declare(missing)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if str(exc) != self._last_error:  # an ACL refusal would say it every turn
                    logger.warning("peer heartbeat check failed: %s", exc)
                self._last_error = str(exc) if isinstance(exc, RedisPermissionError) else None
                TROUBLE.seen()
                continue
            self._last_error = None
            if dead:
                logger.warning("peers without heartbeat: %s", ", ".join(sorted(dead)))
                self.on_dead(dead)
