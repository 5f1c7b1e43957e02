"""Connections to Redis: a single server or a Redis Cluster, detected, behind one interface.

``Router`` connects to the first reachable host, asks ``HELLO``, and either keeps that one
server or, for a cluster node, reads the slot table (``CLUSTER SLOTS``) and keeps one
``NodeClient`` per primary. The layer core only ever asks "which node serves this key".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError

from .. import redis_access
from ..exceptions import (
    LayerConfigError,
    LayerUnavailable,
    RedisPermissionError,
    RedisVersionError,
)
from . import acl
from .access import auth_error
from .acl import is_refusal
from .hosts import connection_kwargs
from .keys import slot_of
from .node import NodeClient, mark_retrieved
from .topology import HELLO, SLOTS, Server, parse_hello

logger = logging.getLogger(__name__)

MIN_REDIS_VERSION = (7, 0)
#: Longest server-side block of a BLMPOP: an empty LIST's pop answers within this.
MAX_BLOCK_SECONDS = 2.0


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
                    ask.add_done_callback(mark_retrieved)
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
