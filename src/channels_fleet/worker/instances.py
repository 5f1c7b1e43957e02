"""The app instances of one host, by claim id: relayed events go to theirs.

An instance is reached by the claim its interface knows it by. A resumable session's instance
changes claim at each resume (keeper.py): ``running`` is re-keyed to the new claim, and the
earlier ones stay its ``aliases``: its home interface still sends its homed channel's messages
under the first claim, and the socket a resume superseded may still have frames in flight.
"""

from __future__ import annotations

import logging
from typing import Any

from ..relay import wire
from .instance import DISCONNECTS, AppInstance
from .owned import DETACHED, HANDED, HANDING_BACK, NOT_OURS
from .session import FORWARDER, UNCOUNTED

logger = logging.getLogger(__name__)


class AppInstances:
    """The app instances of one host, by claim id; relayed events go to theirs."""

    def __init__(self) -> None:
        self.running: dict[str, AppInstance] = {}  # until the app returns
        self.handed: dict[str, AppInstance] = {}  # given back, until the interface's FENCE
        self.aliases: dict[str, AppInstance] = {}  # a session's earlier claims (module doc)

    async def on_event(self, conn_id: str, event: dict[str, Any], sender: str) -> None:
        self._route(conn_id, event, sender)

    async def on_message(self, _: str, payload: list[Any], sender: str) -> None:
        """A MESSAGE item: one homed-channel message for several connections (wire.py)."""
        try:
            body, claims = wire.parse_message(payload)
        except wire.WireError as exc:
            logger.warning("ignored a message item from %s: %s", sender, exc)
            return
        event = {"type": wire.CHANNEL_MESSAGE, "body": body}  # shared: nobody changes it
        for claim in claims:
            self._route(claim, event, sender)

    def _route(self, conn_id: str, event: dict[str, Any], sender: str) -> None:
        handed = self.handed.get(conn_id)
        if handed is not None:
            if event["type"] != "websocket.disconnect":
                handed.keep(event)
            return
        instance = self.running.get(conn_id)
        if instance is not None:
            instance.deliver(event)
            return
        instance = self.aliases.get(conn_id)
        if instance is None or event["type"] in DISCONNECTS:
            return
        if instance.state is HANDING_BACK or instance.state is HANDED:
            # Given back: not taken, not acknowledged; the home's Unacked keeps it for the
            # next owner (a superseded socket's late frame: its client resends it).
            return
        # Not in the current interface's Unacked: its ACK counts must not include it.
        marked = dict(event)
        marked[UNCOUNTED] = conn_id
        if event["type"] == wire.CHANNEL_MESSAGE:
            marked[FORWARDER] = sender  # its ACKs go there (session.HomeCounts)
        instance.deliver(marked)

    def find(self, claim: str) -> AppInstance | None:
        """The running instance reached by ``claim``: its current one or an alias."""
        instance = self.running.get(claim)
        return instance if instance is not None else self.aliases.get(claim)

    def rekey(self, instance: AppInstance, claim: str) -> None:
        """A resume: ``instance`` goes by ``claim`` from now on; its current one becomes an
        alias. The only place ``running`` changes key (before ``instance.attach``)."""
        old = instance.id
        self.running.pop(old, None)
        self.running[claim] = instance
        self.alias(instance, old)

    def alias(self, instance: AppInstance, claim: str) -> None:
        """``instance`` is reached by ``claim`` too (its session's home claim, from an earlier
        owner)."""
        self.aliases[claim] = instance
        if instance.session is not None:
            instance.session.aliases.add(claim)

    def forget(self, instance: AppInstance) -> None:
        """Its app returned: its aliases reach nothing any more."""
        if instance.session is not None:
            for alias in instance.session.aliases:
                if self.aliases.get(alias) is instance:
                    del self.aliases[alias]

    async def on_gone(self, conn_id: str, code: int, sender: str) -> None:
        instance = self.running.get(conn_id)
        if instance is not None and instance.state not in NOT_OURS:
            instance.disconnect(code)
            instance.end_session(code, "client")

    def ifaces(self) -> set[str]:
        """The interfaces holding sockets these instances serve (liveness watches them); a
        detached session's last one holds none."""
        ifaces = {i.iface for i in self.running.values()
                  if i.state not in NOT_OURS and i.state is not DETACHED}
        return ifaces | {i.iface for i in self.handed.values()}
