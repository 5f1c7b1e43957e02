"""One Redis server for the layer: a shared pipelined connection plus dedicated ones for BLMPOP.

``connection.Router`` keeps one ``NodeClient`` per server it routes to (a single Redis, or each
primary of a cluster).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from redis import exceptions as rx
from redis.exceptions import RedisError

from . import _metrics, acl
from .acl import is_refusal
from .resp import RespConnection

logger = logging.getLogger(__name__)

UNBLOCKED_REPLY_WAIT_S = 1.0  # for a BLMPOP's reply after CLIENT UNBLOCK


class NodeClient:
    """One Redis server: a shared pipelined connection plus dedicated ones for BLMPOP."""

    def __init__(self, address: str, options: dict[str, Any]) -> None:
        self.address = address
        self.options = options
        self.socket_timeout: float | None = options.get("socket_timeout")
        self._conn: RespConnection | None = None
        self._lock = asyncio.Lock()
        self._idle_blocking: list[RespConnection] = []
        self._busy_blocking: set[RespConnection] = set()

    def live_connection(self) -> RespConnection | None:
        """The shared connection if it is open now (lets callers write without awaiting)."""
        conn = self._conn
        return conn if conn is not None and not conn.closed else None

    async def _connection(self, args: Sequence[Any]) -> RespConnection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await self._open(args)
            return self._conn

    async def _open(self, args: Sequence[Any]) -> RespConnection:
        """A new connection, for ``args`` (named if its TLS or AUTH is refused)."""
        try:
            conn = await RespConnection.open(self.address, self.options, self.socket_timeout,
                                             acl.command_name(args) if args else "a command")
        except (RedisError, OSError):
            _metrics.node_up(self.address, False)
            raise
        _metrics.node_up(self.address, True)
        return conn

    async def execute(self, *args: Any) -> Any:
        conn = await self._connection(args)
        return await conn.command(*args)

    async def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` in one round trip; errors come back in place of results."""
        conn = await self._connection(commands[0] if commands else ())
        return await conn.batch(commands)

    async def blocking(
        self, block: float, salvage: Callable[[Any], None], *args: Any, asking: bool = False
    ) -> Any:
        """Run a blocking command on a connection of its own (reused once it answered).

        ``asking`` sends ``ASKING`` first on that same connection (a slot being migrated).
        If the caller is cancelled, the command is woken (``CLIENT UNBLOCK``; where the ACL
        refuses it, its block is waited out: acl.py) and a reply that took something goes to
        ``salvage``: a popped message is never dropped.
        """
        conn = None
        while self._idle_blocking and conn is None:
            candidate = self._idle_blocking.pop()
            conn = None if candidate.closed else candidate
        fresh = conn is None
        if conn is None:
            conn = await self._open(args)
        self._busy_blocking.add(conn)  # from here on, close() closes it too
        try:
            if fresh:
                conn.client_id = await self._client_id(conn)
            if asking:  # its +OK is read before the reply below; an error shows there too
                conn.command("ASKING").add_done_callback(mark_retrieved)
            command = conn.command(*args, timeout=block + (self.socket_timeout or 5.0))
            try:
                reply = await asyncio.shield(command)
            except asyncio.CancelledError:
                await self._unblock(conn, command, block)
                if command.done() and not command.cancelled() and command.exception() is None:
                    salvage(command.result())
                raise
        except BaseException:
            conn.close()  # a reply may still be in flight: never reuse this connection
            raise
        finally:
            self._busy_blocking.discard(conn)
        self._idle_blocking.append(conn)
        return reply

    async def _client_id(self, conn: RespConnection) -> int | None:
        """This connection's id, for CLIENT UNBLOCK; None when the ACL refuses either."""
        if acl.WAKE.refused:
            return None
        try:
            return int(await conn.command("CLIENT", "ID"))
        except rx.ResponseError as exc:  # an ACL may refuse it: then wait out the block
            if is_refusal(exc):
                acl.WAKE.refuse(self.address, "CLIENT ID", exc)
            else:
                logger.debug("%s: CLIENT ID failed (%s)", self.address, exc)
            return None

    async def _unblock(self, conn: RespConnection, command: asyncio.Future[Any],
                       block: float) -> None:
        """Wake a blocked command whose caller gave up, and wait for its reply."""
        if command.done():
            return
        wait = block + 0.5
        if conn.client_id is not None and not acl.WAKE.refused:
            try:
                if await self.execute("CLIENT", "UNBLOCK", conn.client_id):
                    wait = UNBLOCKED_REPLY_WAIT_S
            except (RedisError, OSError) as exc:
                if is_refusal(exc):  # @admin, @dangerous: a least-privilege user may not
                    acl.WAKE.refuse(self.address, "CLIENT UNBLOCK", exc)
                else:
                    logger.debug("%s: CLIENT UNBLOCK failed (%s); waiting out the block",
                                 self.address, exc)
        await asyncio.wait([command], timeout=wait)

    async def close(self) -> None:
        conns = [self._conn, *self._idle_blocking, *self._busy_blocking]
        self._conn, self._idle_blocking, self._busy_blocking = None, [], set()
        for conn in conns:
            if conn is not None:
                conn.close()

    def __repr__(self) -> str:
        return f"NodeClient({self.address})"


def mark_retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's outcome read: asyncio logs an exception nobody read as lost."""
    if not future.cancelled():
        future.exception()  # mark it retrieved: the command after it reports the failure
