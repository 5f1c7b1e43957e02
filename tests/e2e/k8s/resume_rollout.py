"""The interface rollout with resumable clients (issue 29): `kubectl rollout restart` of the
interfaces under members of a chat room that speak ``channels-fleet.resume.v1``
(``FleetSocket``), through the interface Service as every other scenario.

Each member posts numbered messages (``<room>-s<sender>-<n>``) while the interfaces roll; each
message goes through the room's group to every member, so every member must read every
member's messages exactly once, in each sender's order, although its socket moved to a new
interface (a resume) at least once.

What the app saw is read from the app's side: the demo's consumer tells the room when it ends
(``presence.leave``, chat/consumers.py) and members that asked for presence (a ``status``
frame) see those frames; the workers count every session that ended
(``channels_fleet_sessions_ended_total``). Both must stay still: no consumer left the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

from channels_fleet.exceptions import SessionEnded
from channels_fleet.resume.client import FleetSocket

from .. import scenarios
from ..kube_stack import KubeStack

#: Members in the room, and how often each posts while the interfaces roll.
MEMBERS, RATE = 8, 2.0
#: How long after the rollout every message may still take to arrive (replays, late resumes).
SETTLE_S = 30.0


class Member:
    """One FleetSocket in the room: the numbers it read of each sender, in arrival order, and
    the presence frames its consumer sent it."""

    def __init__(self, stack: KubeStack, room: str, index: int) -> None:
        self.index = index
        url = scenarios.ChatClient(stack, room).url
        self.socket = FleetSocket(
            url, origin=stack.base_url.rstrip("/"), open_timeout=10, close_timeout=2,
            additional_headers=list(stack.chat.headers) or None,
            on_new_session=self._new_session)
        self.pattern = re.compile(re.escape(room) + r"-s(\d{2})-(\d{5})")
        self.got: dict[int, list[int]] = {}
        self.me: str | None = None  # the consumer's channel (its presence id)
        self.home: str | None = None  # the interface it first connected to
        self.left: set[str] = set()  # presence ids that left the room
        self.new_sessions = 0
        self.sent = 0
        self.ended: SessionEnded | None = None
        self.status = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def _new_session(self, lost: int) -> None:
        self.new_sessions += 1  # the app lost this member's consumer

    async def open(self) -> None:
        await self.socket.connect()
        self._reader = asyncio.create_task(self._read())
        # Presence frames from now on; the answer also proves the consumer joined the group.
        await self.socket.send(json.dumps({"type": "status"}))
        await asyncio.wait_for(self.status.wait(), 15)

    async def _read(self) -> None:
        try:
            async for raw in self.socket:
                self._take(json.loads(raw))
        except SessionEnded as exc:
            self.ended = exc

    def _take(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "status":
            self.me, self.home = frame["me"]["id"], frame.get("interface")
            self.status.set()
        elif frame.get("type") == "presence" and "leave" in frame:
            self.left.add(frame["leave"]["id"])
        elif "message" in frame and (m := self.pattern.fullmatch(str(frame["message"]))):
            self.got.setdefault(int(m.group(1)), []).append(int(m.group(2)))

    async def post(self, room: str) -> None:
        await self.socket.send(json.dumps({"message": f"{room}-s{self.index:02d}-{self.sent:05d}"}))
        self.sent += 1

    def missing(self, members: list[Member]) -> int:
        return sum(len(set(range(s.sent)) - set(self.got.get(s.index, ()))) for s in members)

    def missed(self, members: list[Member]) -> list[str]:
        """The messages this member never read, as ``s<sender>-<n>``."""
        return [f"s{s.index:02d}-{n}" for s in members
                for n in sorted(set(range(s.sent)) - set(self.got.get(s.index, ())))]

    def duplicated(self) -> int:
        return sum(len(numbers) - len(set(numbers)) for numbers in self.got.values())

    def out_of_order(self) -> int:
        return sum(sum(b < a for a, b in zip(numbers, numbers[1:], strict=False))
                   for numbers in self.got.values())

    async def close(self) -> None:
        await self.socket.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


async def sessions_ended(stack: KubeStack) -> dict[str, float]:
    """Sessions ended so far, per worker pod (the workers do not roll with the interfaces)."""
    texts = await stack.metrics("worker")
    return {pod: sum(v for _, v in scenarios.samples(text, "channels_fleet_sessions_ended_total"))
            for pod, text in texts.items()}


async def resumed_on_interfaces(stack: KubeStack) -> float:
    texts = await stack.metrics("interface")
    return sum(v for text in texts.values()
               for _, v in scenarios.samples(text, "channels_fleet_sessions_resumed_total"))


async def interface_rollout_resumable(stack: KubeStack, result: dict[str, Any]) -> None:
    """Roll the interfaces under MEMBERS resumable members posting RATE messages a second
    each; fill ``result``: ``app_disconnects`` (the larger of the consumers' leaves any member
    saw and the workers' ended sessions), ``lost`` and ``duplicated`` (member x message
    pairs), ``out_of_order``, each member's resumes and new sessions."""
    room = scenarios.unique("resume-roll")
    members = [Member(stack, room, i) for i in range(MEMBERS)]
    await asyncio.gather(*(m.open() for m in members))
    ids = {m.me for m in members}
    ended_before = await sessions_ended(stack)
    stop = asyncio.Event()

    async def post_loop(member: Member) -> None:
        while not stop.is_set():
            with contextlib.suppress(SessionEnded):
                await member.post(room)
            await asyncio.sleep(1 / RATE)

    posters = [asyncio.create_task(post_loop(m)) for m in members]
    t0 = time.perf_counter()
    try:
        try:
            await stack.restart_interfaces()
            await asyncio.sleep(2)  # posts on the new interfaces too
        finally:
            stop.set()
            await asyncio.gather(*posters)
        result["rollout_s"] = round(time.perf_counter() - t0, 1)

        async def all_arrived() -> bool:
            return not sum(m.missing(members) for m in members)

        await scenarios.eventually(all_arrived, SETTLE_S, 0.5)
        ended_after = await sessions_ended(stack)
        ended = sum(max(0.0, n - ended_before.get(pod, 0.0)) for pod, n in ended_after.items())
        left = set().union(*(m.left for m in members)) & ids
        result.update(
            app_disconnects=max(len(left), int(ended)), consumers_left=len(left),
            sessions_ended=int(ended), sent=sum(m.sent for m in members),
            lost=sum(m.missing(members) for m in members),
            lost_per_member=[m.missing(members) for m in members],
            lost_examples={f"{m.index}@{m.home}": m.missed(members)[:12]
                           for m in members if m.missing(members)},
            duplicated=sum(m.duplicated() for m in members),
            out_of_order=sum(m.out_of_order() for m in members),
            resumes=sorted(m.socket.resumes for m in members),
            new_sessions=sum(m.new_sessions for m in members),
            sessions_ended_for_good=[str(m.ended) for m in members if m.ended],
            resumed_on_new_interfaces=int(await resumed_on_interfaces(stack)),
            workers_seen=len(ended_after))
    finally:
        await asyncio.gather(*(m.close() for m in members), return_exceptions=True)
