"""Runs Redis commands for the layer with bounded, topology-aware retries.

Commands are grouped by the node serving their key and sent as one pipeline per node (all
nodes concurrently). MOVED follows the redirection, ASK sends ``ASKING`` first, NOSCRIPT
loads the script and retries; a broken connection, a cluster that is down or a failover in
progress backs off, re-reads the slot table and retries, until ``retry_timeout`` has passed.
Then the command fails with ``LayerUnavailable`` naming the node and the last failure. A
command the Redis user's ACL refuses fails at once with ``RedisPermissionError`` (acl.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as rx

from ..exceptions import LayerUnavailable, RedisPermissionError
from . import _metrics
from .acl import is_refusal, refused
from .backoff import Backoff
from .connection import Router
from .node import NodeClient
from .resp import UnblockedError
from .scripts import BY_SHA

logger = logging.getLogger(__name__)

# Failures worth waiting out: the node or the cluster will be back (or replaced) soon.
TRANSIENT = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ClusterDownError,
    rx.TryAgainError,
    rx.ReadOnlyError,
    rx.MasterDownError,
    UnblockedError,
    OSError,
)
#: How long a command waits between tries while Redis is unavailable (also the layer's connect).
RETRY = Backoff(base=0.05, cap=0.5)


@dataclass(eq=False)
class Op:
    """One command for the node that serves ``key``; ``result``/``error`` are filled in."""

    key: str
    args: tuple[Any, ...]
    result: Any = None
    error: BaseException | None = None
    ask: NodeClient | None = field(default=None, repr=False)


class Executor:
    """Runs ``Op``s on a ``Router`` with retries bounded by ``retry_timeout`` seconds."""

    def __init__(self, router: Router, retry_timeout: float) -> None:
        self.router = router
        self.retry_timeout = retry_timeout

    async def call(self, key: str, *args: Any) -> Any:
        """Run one command for ``key``; raise its error."""
        node = self.router.node_for(key)
        conn = node.live_connection()
        if conn is not None:  # the common case: no redirection, no failure
            try:
                return await conn.command(*args)
            except (rx.AskError, rx.NoScriptError):
                pass  # MovedError is an AskError; the full path below deals with each
            except TRANSIENT as exc:
                # A master gone silent (its node cut off) answers nothing until the socket
                # timeout; by then its replica may serve the slot. Re-read the table before
                # the next try, as the full path does after each failure: a second try on the
                # silent node would spend a second socket timeout of the retry budget.
                _metrics.retry(exc)
                _metrics.node_up(node.address, False)
                logger.info("redis %s not available (%s); retrying", node.address, exc)
                await self._back_off(RETRY.delay(1))
            except rx.ResponseError as exc:  # after TRANSIENT: TRYAGAIN is a reply too
                if is_refusal(exc):
                    raise self._refused(self.router.node_for(key), args, key, exc) from exc
                raise
        op = Op(key, args)
        await self.run([op])
        if op.error is not None:
            raise op.error
        return op.result

    async def run(self, ops: list[Op]) -> None:
        """Run every op (one pipeline per node per attempt); each gets a result or an error."""
        deadline = time.monotonic() + self.retry_timeout
        failures = 0
        todo = ops
        while todo:
            groups: dict[NodeClient, list[Op]] = defaultdict(list)
            for op in todo:
                groups[op.ask or self.router.node_for(op.key)].append(op)
            if len(groups) == 1:  # the common case: no task per node
                node, group = next(iter(groups.items()))
                outcomes = [await self._run_on(node, group)]
            else:
                outcomes = await asyncio.gather(
                    *(self._run_on(node, group) for node, group in groups.items())
                )
            retry: list[Op] = []
            transient: BaseException | None = None
            for (node, group), results in zip(groups.items(), outcomes, strict=True):
                for op, result in zip(group, results, strict=True):
                    op.ask = None
                    if not isinstance(result, BaseException):
                        op.result = result
                    elif isinstance(result, rx.NoScriptError):
                        try:
                            await self._load_script(node, op)
                        except TRANSIENT as exc:
                            transient = exc
                            op.error = self._unavailable(node, exc)
                        except rx.ResponseError as exc:
                            if not is_refusal(exc):
                                raise
                            op.error = self._refused(node, ("SCRIPT", "LOAD"), None, exc)
                            continue
                        retry.append(op)
                    elif isinstance(result, rx.MovedError):
                        _metrics.retry(result)
                        self.router.moved(result.slot_id, result.host, result.port)
                        retry.append(op)
                    elif isinstance(result, rx.AskError):
                        _metrics.retry(result)
                        op.ask = self.router.node_at(result.host, result.port)
                        retry.append(op)
                    elif isinstance(result, TRANSIENT):
                        _metrics.retry(result)
                        _metrics.node_up(node.address, False)
                        transient = result
                        op.error = self._unavailable(node, result)
                        retry.append(op)
                    elif is_refusal(result):
                        op.error = self._refused(node, op.args, op.key, result)
                    else:
                        op.error = result
            wait = RETRY.delay(failures + 1) if transient else 0.0
            if retry and time.monotonic() + wait > deadline:
                last = transient or rx.TryAgainError("redirected too often")
                _metrics.error(last)
                for op in retry:
                    op.error = op.error or self._unavailable(self.router.node_for(op.key), last)
                return
            if transient is not None:
                failures += 1
                logger.info("redis not available (%s); retrying in %.2fs", transient, wait)
                await self._back_off(wait)
            for op in retry:
                op.error = None
            todo = retry

    async def blocking(
        self, key: str, block: float, salvage: Callable[[Any], None], *args: Any
    ) -> Any:
        """Run a blocking command (BLMPOP) on its own connection, with the same retries.

        If the caller is cancelled, a reply that took something goes to ``salvage``.
        """
        deadline = time.monotonic() + self.retry_timeout
        failures = 0
        ask: NodeClient | None = None
        while True:
            node = ask or self.router.node_for(key)
            try:
                return await node.blocking(block, salvage, *args, asking=ask is not None)
            except rx.MovedError as exc:
                _metrics.retry(exc)
                self.router.moved(exc.slot_id, exc.host, exc.port)
                if time.monotonic() > deadline:
                    _metrics.error(exc)
                    raise self._unavailable(node, exc) from exc
            except rx.AskError as exc:
                _metrics.retry(exc)
                ask = self.router.node_at(exc.host, exc.port)
                continue
            except TRANSIENT as exc:
                _metrics.retry(exc)
                _metrics.node_up(node.address, False)
                failures += 1
                wait = RETRY.delay(failures)
                if time.monotonic() + wait > deadline:
                    _metrics.error(exc)
                    raise self._unavailable(node, exc) from exc
                logger.info("redis %s not available (%s); retrying", node.address, exc)
                await self._back_off(wait)
            except rx.ResponseError as exc:
                if not is_refusal(exc):
                    raise
                raise self._refused(node, args, key, exc) from exc
            ask = None

    async def _back_off(self, wait: float) -> None:
        """Wait ``wait`` seconds and re-read the slot table."""
        await asyncio.sleep(wait)
        try:
            await self.router.refresh()
        except (LayerUnavailable, RedisPermissionError) as exc:
            logger.info("slot table not refreshed: %s", exc)

    async def _run_on(self, node: NodeClient, ops: list[Op]) -> list[Any]:
        commands: list[tuple[Any, ...]] = []
        for op in ops:
            if op.ask is not None:
                commands.append(("ASKING",))
            commands.append(op.args)
        try:
            results = await node.pipeline(commands)
        except (rx.RedisError, OSError) as exc:
            return [exc] * len(ops)
        if len(commands) != len(ops):  # drop the ASKING replies
            results = [r for c, r in zip(commands, results, strict=True) if c != ("ASKING",)]
        return results

    async def _load_script(self, node: NodeClient, op: Op) -> None:
        script = BY_SHA.get(str(op.args[1]))
        if script is None:
            raise RuntimeError(f"NOSCRIPT for an unknown script {op.args[1]!r}")
        await node.execute("SCRIPT", "LOAD", script.source)

    @staticmethod
    def _refused(node: NodeClient, args: Any, key: str | None,
                 exc: BaseException) -> BaseException:
        return refused(node.address, node.options.get("username"), args, key, exc)

    def _unavailable(self, node: NodeClient, exc: BaseException) -> LayerUnavailable:
        return LayerUnavailable(
            f"Redis {node.address} unavailable for {self.retry_timeout:g}s "
            f"(retry_timeout; hosts: {self.router.host_names}): {type(exc).__name__}: {exc}"
        )
