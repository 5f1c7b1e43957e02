"""Where each resumable session lives: the registry (docs/design/resume-server.md §1).

One small Redis string per session, ``fleet:session:{<id>}`` (its own slot: sessions spread
over the shards), holding where the session's app instance runs and through which claim::

    {"worker": "fleet.w!...", "claim": "3f2a.1c:2", "iface": "fleet.i!..."}

The worker that owns the app instance writes it when the session starts, at every move (a
resume, a re-home) and at each detach, with a TTL of the resume window plus the heartbeat TTL
(a killed worker's entries go by themselves); it deletes it when the session ends. An
interface reads it once per resume. Nothing here runs per frame.

    registry = SessionRegistry(layer, "fleet")
    await registry.put(session_id, SessionEntry(worker, claim, iface), ttl=75.0)
    entry = await registry.get(session_id)     # None: unknown or ended
    await registry.delete(session_id)
"""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

from .session_items import session_key

logger = logging.getLogger(__name__)


class SessionEntry(NamedTuple):
    worker: str  # the relay channel of the worker running the app instance
    claim: str  # the claim its items name (wire.claim_id)
    iface: str  # the interface holding its socket ("" while detached)


class SessionRegistry:
    """The registry on the relay's Redis (``layer``: the relay's layer, key prefix ``prefix``)."""

    def __init__(self, layer: Any, prefix: str) -> None:
        self.layer = layer
        self.prefix = prefix

    async def put(self, session_id: str, entry: SessionEntry, ttl: float) -> None:
        key = session_key(session_id, self.prefix)
        value = json.dumps(entry._asdict(), separators=(",", ":"))
        await self.layer.command(key, "SET", key, value, "PX", max(1, int(ttl * 1000)))

    async def get(self, session_id: str) -> SessionEntry | None:
        """The session's entry; None if there is none (never started, ended, expired) or it
        cannot be read."""
        key = session_key(session_id, self.prefix)
        (raw,) = await self.layer.command(key, "MGET", key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return SessionEntry(str(data["worker"]), str(data["claim"]), str(data["iface"]))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("session %s: unreadable registry entry (%r)", session_id, exc)
            return None

    async def delete(self, session_id: str) -> None:
        key = session_key(session_id, self.prefix)
        await self.layer.command(key, "DEL", key)
