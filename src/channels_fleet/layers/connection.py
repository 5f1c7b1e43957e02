"""Connections to Redis: a single server or a Redis Cluster, detected, behind one interface.

``Router`` connects to the first reachable host, asks ``HELLO``, and either keeps that one
server or, for a cluster node, reads the slot table (``CLUSTER SLOTS``) and keeps one
``NodeClient`` per primary. The layer core only ever asks "which node serves this key".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis import exceptions as rx
from redis.exceptions import RedisError

from .. import redis_access
from ..exceptions import (
    LayerConfigError,
    LayerUnavailable,
    RedisPermissionError,
    RedisVersionError,
)
from . import _metrics, acl
from .access import auth_error
from .acl import is_refusal
from .hosts import connection_kwargs
from .keys import slot_of
from .resp import RespConnection
from .topology import HELLO, SLOTS, Server, parse_hello

logger = logging.getLogger(__name__)

MIN_REDIS_VERSION = (7, 0)
UNBLOCKED_REPLY_WAIT_S = 1.0  # for a BLMPOP's reply after CLIENT UNBLOCK
#: Longest server-side block of a BLMPOP: an empty LIST's pop answers within this.
MAX_BLOCK_SECONDS = 2.0


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

    async def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` in one round trip; errors come back in place of results."""
        conn = await self._connection(commands[0] if commands else ())
        results: list[Any] = []
        for future in conn.pipeline(commands):  # type: ignore[arg-type]
            try:
                results.append(await future)
            except rx.RedisError as exc:
                results.append(exc)
        return results

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
                conn.command("ASKING").add_done_callback(_retrieve)
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


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # mark it retrieved: the command after it reports the failure


class Router:
    """Finds the server of each key, for a single Redis or a Redis Cluster."""

    def __init__(self, hosts: list[tuple[str, dict[str, Any]]]) -> None:
        self.hosts = hosts
        self.is_cluster = False
        self._kwargs = connection_kwargs(*hosts[0])
        self._nodes: dict[str, NodeClient] = {}
        self._slots: list[NodeClient] = []
        self._single: NodeClient | None = None
        self._seeds: list[str] = []  # every node of the last table, and the configured entry
        self._entry = ""
        self._refresh_lock = asyncio.Lock()
        self._background_refresh: asyncio.Task[None] | None = None

    @property
    def host_names(self) -> str:
        return ", ".join(url for url, _ in self.hosts)

    def _node(self, address: str) -> NodeClient:
        node = self._nodes.get(address)
        if node is None:
            kwargs = dict(self._kwargs)
            if not address.startswith("/"):  # a unix socket path keeps its options as they are
                host, _, port = address.rpartition(":")
                kwargs.update(host=host, port=int(port))
            node = self._nodes[address] = NodeClient(address, kwargs)
        return node

    async def connect(self) -> None:
        """Connect to the first reachable host and detect single Redis or Cluster."""
        failures = []
        for url, extra in self.hosts:
            kwargs = connection_kwargs(url, extra)
            host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
            address = kwargs.get("path") or f"{host}:{port}"
            self._kwargs = kwargs
            node = self._node(address)
            try:
                server = parse_hello(await node.execute(*HELLO))
            except (RedisError, OSError) as exc:
                # No password where the server needs one: no retry will bring it.
                refused = auth_error(redis_access.display(url), kwargs.get("username"),
                                     "HELLO", exc)
                if refused is not None:
                    raise refused from exc
                failures.append(f"{url}: {exc}")
                continue
            self._check_version(server, url)
            if server.cluster:
                self.is_cluster = True
                self._entry = address
                self._seeds = [address]
                await self.refresh()
            else:
                if len(self.hosts) > 1:
                    raise LayerConfigError(
                        f"CHANNEL_LAYERS CONFIG 'hosts' lists {len(self.hosts)} servers but {url} "
                        "is not a Redis Cluster node; list one URL for a single Redis, or the "
                        "startup nodes of a cluster"
                    )
                self._single = node
            return
        raise LayerUnavailable("no Redis host reachable: " + "; ".join(failures))

    @staticmethod
    def _check_version(server: Server, url: str) -> None:
        if server.version_tuple < MIN_REDIS_VERSION:
            raise RedisVersionError(
                f"{url} runs Redis {server.version}; RedisClusterChannelLayer needs Redis >= 7.0 "
                "(BLMPOP)"
            )

    async def refresh(self) -> None:
        """Re-read the cluster's slot table from any node that answers."""
        if not self.is_cluster:
            return
        if self._refresh_lock.locked():
            # Someone is refreshing already; wait for that result instead of asking again.
            async with self._refresh_lock:
                return
        async with self._refresh_lock:
            known = [a for a, n in self._nodes.items() if n in self._slots]
            candidates = list(dict.fromkeys(known + self._seeds))
            # Every node at once, the first full table wins: a node that just died costs a
            # connect timeout, and asking one by one would make every caller wait it out.
            failures = []
            refusal: BaseException | None = None
            asks = {asyncio.ensure_future(self._node(a).execute("CLUSTER", "SLOTS")): a
                    for a in candidates}
            pending = set(asks)
            try:
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for ask in done:
                        address = asks[ask]
                        exc = ask.exception()
                        if exc is not None:
                            if not isinstance(exc, (RedisError, OSError)):
                                raise exc
                            if is_refusal(exc):
                                refusal = exc
                            failures.append(f"{address}: {exc}")
                        elif self._apply_slots(ask.result(), address):
                            return
                        else:
                            failures.append(f"{address}: slot table incomplete")
            finally:
                # The rest are left to finish on their own (a connect may be under way); those
                # that failed beside the winner are read too, or asyncio logs them as lost.
                for ask in asks:
                    ask.add_done_callback(_retrieve)
            if refusal is not None:  # the ACL, not the nodes: waiting will not help
                raise acl.refused(self._entry, self._kwargs.get("username"),
                                  ("CLUSTER", "SLOTS"), None, refusal)
            raise LayerUnavailable("no cluster node answered CLUSTER SLOTS: " + "; ".join(failures))

    def _apply_slots(self, reply: Iterable[Any], asked: str) -> bool:
        table: list[NodeClient | None] = [None] * SLOTS
        seeds = []
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            node = self._node(self._address(primary, asked))
            table[start : end + 1] = [node] * (end - start + 1)
            seeds.append(node.address)
            seeds.extend(self._address(replica, asked) for replica in entry[3:])
        if any(node is None for node in table):
            return False
        self._slots = table  # type: ignore[assignment]
        # Not the nodes of older tables: on Kubernetes a replaced pod's IP is gone for good.
        self._seeds = list(dict.fromkeys([*seeds, self._entry]))
        return True

    @staticmethod
    def _address(entry: Sequence[Any], asked: str) -> str:
        host = entry[0].decode() if isinstance(entry[0], bytes) else str(entry[0])
        if not host or host == "?":
            host = asked.rpartition(":")[0]
        return f"{host}:{int(entry[1])}"

    def node_for(self, key: str) -> NodeClient:
        if self._single is not None:
            return self._single
        return self._slots[slot_of(key)]

    def block_timeout(self, key: str) -> float:
        """How long a BLMPOP of ``key`` may block server-side: under its node's socket timeout."""
        socket_timeout = self.node_for(key).socket_timeout
        if not socket_timeout:
            return MAX_BLOCK_SECONDS
        return round(min(MAX_BLOCK_SECONDS, socket_timeout / 2), 3)

    def node_at(self, host: str, port: int) -> NodeClient:
        return self._node(f"{host}:{port}")

    def set_slot(self, slot: int, host: str, port: int) -> None:
        if self._slots:
            self._slots[slot] = self._node(f"{host}:{port}")

    def moved(self, slot: int, host: str, port: int) -> None:
        """Follow a MOVED reply: this slot at once, the whole table in the background.

        After a failover every slot of the old master moved, not just this one; re-reading the
        table once saves a redirection per slot, or a connect timeout per slot once the old
        master is gone.
        """
        self.set_slot(slot, host, port)
        if self._background_refresh is None or self._background_refresh.done():
            self._background_refresh = asyncio.ensure_future(self._refresh_logged())

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except (LayerUnavailable, RedisPermissionError) as exc:
            logger.info("slot table not re-read after MOVED: %s", exc)

    def primaries(self) -> list[NodeClient]:
        if self._single is not None:
            return [self._single]
        return list(dict.fromkeys(self._slots))

    async def close(self) -> None:
        if self._background_refresh is not None:
            self._background_refresh.cancel()
        nodes, self._nodes = list(self._nodes.values()), {}
        self._slots, self._single = [], None
        for node in nodes:
            try:
                await node.close()
            except (RedisError, OSError) as exc:  # closing a dead node's sockets
                logger.debug("closing %s: %s", node.address, exc)
