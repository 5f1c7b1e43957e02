"""What a connection's owner relays to the interface, applied: its app's output (SEND), the end
of its app instance (END, RELEASE), its homed channel (INBOX, KEPT), and a send Redis refused.

Every item names a claim (``wire.claim_id``): one of an earlier claim (a worker the socket was
re-homed away from, or the same worker's earlier app instance) is ignored
(``Connections.current``).

    items = OwnerItems(conns, claims, writer, inboxes)
    side.handle({wire.SEND: items.on_send, wire.END: items.on_end, ...})
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..observability.metrics import METRICS
from ..relay import wire
from ..resume.envelope import END
from .claims import Claims
from .client import DETACHED, ClientConn, Connections
from .edge import ClientWriter
from .inbox import Inboxes

logger = logging.getLogger(__name__)


class OwnerItems:
    """The handlers of the owners' items about one connection; one per gateway."""

    def __init__(self, conns: Connections, claims: Claims, writer: ClientWriter,
                 inboxes: Inboxes, end_detached: Callable[[ClientConn], None]) -> None:
        self.conns = conns
        self.claims = claims
        self.writer = writer
        self.inboxes = inboxes
        self.end_detached = end_detached  # a home's DETACHED connection has no socket to end

    async def on_send(self, claim: str, message: dict[str, Any], sender: str) -> None:
        conn = self.conns.current(claim)
        if conn is None:
            return
        try:
            if not await self.writer.write(conn, message):
                self.claims.tell_gone(conn, 1006)  # cut off: it did not read
        except Exception as exc:
            # Daphne refused it (a worker that does not check what apps send): end the
            # connection (500, a cut response or 1011) rather than write what follows.
            logger.error("%s %s: the server refused the app's %s (%r); ending it", conn.id,
                         conn.scope.get("path"), message.get("type"), exc)
            if self.writer.refused(conn):
                self.claims.tell_gone(conn, 1011)

    async def on_inbox(self, claim: str, prefix: str, sender: str) -> None:
        """The owner's app took its homed channel on the layer of key prefix ``prefix``."""
        if self.conns.current(claim) is not None:
            self.inboxes.pull(prefix)

    async def on_kept(self, claim: str, kept: list[Any], sender: str) -> None:
        """Groups an old app instance of a moving socket kept its channel in: to be left when
        the socket is over (at once if it is over already)."""
        try:
            prefix, groups = wire.parse_kept(kept)
        except wire.WireError as exc:
            logger.warning("ignored a kept item from %s: %s", sender, exc)
            return
        conn_id = wire.claimed_conn(claim)
        conn = self.conns.get(conn_id)
        if conn is None or conn.finished:
            await self.inboxes.discard(conn_id, [(prefix, groups)])
        else:
            conn.kept.append((prefix, groups))

    async def on_release(self, claim: str, code: int, sender: str) -> None:
        conn = self.conns.current(claim)
        if conn is not None and conn.state is DETACHED:
            self.end_detached(conn)
        elif conn is not None:
            conn.take_owner_to_tell()  # it released the connection: it knows
            await self.writer.end(conn, code)

    async def on_end(self, claim: str, _: None, sender: str) -> None:
        conn = self.conns.current(claim)
        if conn is not None and conn.state is DETACHED:
            self.end_detached(conn)
        elif conn is not None:
            # The app finished without ending the connection: what Daphne does on a crash.
            if conn.session is not None and conn.accepted:
                await self.writer.control(conn, END)  # and its session with it
            await self.writer.end(conn, 1011)

    def on_undeliverable(self, dest: str, items: list[wire.Item]) -> None:
        """Redis took nothing for worker ``dest`` within the layer's retries: the sockets those
        client events and channel messages were for are closed (1013), not left with a hole."""
        claims: set[str] = set()
        for kind, claim, payload in items:
            claims.update(payload[1] if kind == wire.MESSAGE else (claim,))  # ours: well formed
        for claim in claims:
            conn = self.conns.current(claim)
            if conn is not None:
                METRICS.messages_dropped.labels("channel_full").inc()
                self.writer.spawn_end(conn, 1013)
