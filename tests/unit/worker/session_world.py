"""A worker's session machinery on its own, for the session tests: app instances, their table,
the keeper and the real SessionRegistry over a dict, with a relay that records every post."""

from __future__ import annotations

import asyncio
from typing import Any

from channels_fleet.relay import wire
from channels_fleet.relay.session_items import SessionMark, session_mark
from channels_fleet.relay.sessions import SessionRegistry
from channels_fleet.relay.side import TaskSet
from channels_fleet.worker.acks import Acks
from channels_fleet.worker.instance import AppInstance
from channels_fleet.worker.instances import AppInstances
from channels_fleet.worker.keeper import SessionKeeper
from channels_fleet.worker.settings import WorkerSettings

SID = "0123456789abcdef0123456789abcdef"
I1, I2, I3 = "fleet.iface.a!1", "fleet.iface.b!2", "fleet.iface.c!3"
WORKER = "fleet.worker.w!1"
ORIGIN = "https://app.example"


class Relay:
    """What the worker posts, in order, with its destination."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, list[Any]]] = []

    def post(self, dest: str, item: list[Any], *, control: bool = False) -> bool:
        self.posts.append((dest, item))
        return True

    def set_trailer(self, trailer: Any) -> None:
        pass

    def to(self, dest: str) -> list[list[Any]]:
        """Items posted to ``dest`` (ACK items left out), and forget them."""
        items = [item for d, item in self.posts if d == dest and item[0] != wire.ACK]
        self.posts = [(d, item) for d, item in self.posts if d != dest]
        return items


class Store:
    """The relay layer's ``command()`` over a dict: SET (with PX), MGET, DEL."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.ttl_ms: dict[str, int] = {}
        self.fail = False

    async def command(self, key: str, *args: Any) -> Any:
        if self.fail:
            raise ConnectionError("redis away")
        op = args[0]
        if op == "SET":
            self.data[args[1]], self.ttl_ms[args[1]] = args[2], args[4]
            return "OK"
        if op == "MGET":
            return [self.data.get(k) for k in args[1:]]
        if op == "DEL":
            return int(self.data.pop(args[1], None) is not None)
        raise AssertionError(op)


class Side:
    """What the keeper uses of a RelaySide."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.channel = WORKER
        self.tasks = TaskSet()
        self.draining = False
        self.layer = None


class App:
    """A tiny ASGI app: accepts (with the client's first subprotocol), records every event,
    returns on its disconnect. ``gate`` cleared: it takes nothing until set again."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            await self.gate.wait()
            event = await receive()
            self.seen.append(event)
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept", "subprotocol": scope["subprotocols"][0]})
            elif event["type"] == "websocket.disconnect":
                return

    def texts(self) -> list[str]:
        return [e["text"] for e in self.seen if e["type"] == "websocket.receive"]


class World:
    def __init__(self, **settings: Any) -> None:
        self.relay = Relay()
        self.store = Store()
        self.app = App()
        self.settings = WorkerSettings(redis_url=("redis://nowhere:1",), app="x:app", **settings)
        self.side = Side(self.relay)
        self.instances = AppInstances()
        self.registry = SessionRegistry(self.store, "fleet")
        self.keeper = SessionKeeper(self.side, self.settings, self.instances,  # type: ignore[arg-type]
                                    self.registry)
        self.acks = Acks(self.relay, 60.0)  # type: ignore[arg-type]

    async def open(self, *, mark: SessionMark | None = None, claim: str = "c.1~1",
                   iface: str = I1) -> AppInstance:
        scope = {"type": "websocket", "path": "/ws/", "subprotocols": ["chat"],
                 "headers": [(b"origin", ORIGIN.encode())]}
        session = self.keeper.hold(mark or session_mark(SID), iface, claim)
        instance = AppInstance(claim, iface, scope, self.app, relay=self.relay,  # type: ignore[arg-type]
                               settings=self.settings, acks=self.acks, on_end=self._ended,
                               session=session, on_session_end=self.keeper.ended)
        self.instances.running[claim] = instance
        self.keeper.start(instance)
        instance.task = asyncio.create_task(instance.run())
        await settle()
        return instance

    def _ended(self, instance: AppInstance) -> None:
        self.instances.running.pop(instance.id, None)
        self.instances.forget(instance)

    async def frame(self, claim: str, seq: int, text: str) -> None:
        await self.instances.on_event(
            claim, {"type": "websocket.receive", "text": text, "fleet_seq": seq}, I1)
        await settle()

    async def resume(self, claim: str, last: int, iface: str = I2, *,
                     origin: str = ORIGIN, session_id: str = SID) -> None:
        await self.keeper.on_resume(claim, [session_id, last, origin], iface)
        await settle()

    async def stop(self) -> None:
        self.acks.stop()
        for instance in list(self.instances.running.values()):
            if instance.task is not None:
                instance.task.cancel()
        await self.side.tasks.cancel()

    def entry(self) -> Any:
        return self.store.data.get(f"fleet:session:{{{SID}}}")


async def settle() -> None:
    """Let the app instance, and the registry's tasks, run what they can."""
    await asyncio.sleep(0.01)
