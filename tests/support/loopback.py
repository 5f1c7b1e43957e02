"""A loopback fleet: one Gateway and any number of Hosts in this process, over an in-process layer.

The relay, claims, re-homing and hand-back run as they do in the services, with Channels'
``InMemoryChannelLayer`` in place of Redis and :class:`MemoryLiveness` in place of heartbeats:
fast, deterministic tests of the connection states without processes.

    fleet = LoopbackFleet(EchoApp())
    await fleet.start()
    host = await fleet.add_host()
    client = fleet.client("/ws/")
    assert (await client.connect())["type"] == "websocket.accept"
    client.send_text("hi")
    assert (await client.next())["text"] == f"{host.side.channel}:hi"
    await fleet.kill(host)                # as kill -9: silent, then declared dead
    await fleet.stop()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from channels.layers import InMemoryChannelLayer

from channels_fleet.exceptions import LayerUnavailable
from channels_fleet.interface.gateway import Gateway
from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.relay import wire
from channels_fleet.worker.host import Host
from channels_fleet.worker.settings import WorkerSettings

NOWHERE = ("redis://loopback.invalid:1",)  # settings need a URL; nothing connects to it


class LoopbackLayer(InMemoryChannelLayer):
    """Channels' in-memory layer, fit for several workers waiting on one channel.

    Channels 4.3's drops a channel's queue when a cancelled receive leaves it empty, while
    another receiver still waits on that queue (a draining worker stops taking from
    ``fleet.connect``: the other workers never see an envelope again); and it reads a
    ``channel_capacity`` dict without compiling it.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channel_capacity = self.compile_capacities(kwargs.get("channel_capacity") or {})
        self._held: dict[str, list[Any]] = {}
        self._refused: set[str] = set()

    def refuse(self, channel: str) -> None:
        """Sends to ``channel`` fail from now on, as the layer's do once its retries ran out
        (the shard of the channel down), until :meth:`accept`."""
        self._refused.add(channel)

    def accept(self, channel: str) -> None:
        self._refused.discard(channel)

    def hold(self, channel: str) -> None:
        """Keep what is sent to ``channel`` from now on until :meth:`release` (a slow path)."""
        self._held.setdefault(channel, [])

    async def release(self, channel: str) -> None:
        """Deliver what was held for ``channel``, in order, and hold no more."""
        for message in self._held.pop(channel, []):
            await super().send(channel, message)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if channel in self._refused:
            raise LayerUnavailable(f"{channel}: refused (LoopbackLayer.refuse)")
        held = self._held.get(channel)
        if held is not None:
            held.append(message)
            return
        await super().send(channel, message)

    async def receive(self, channel: str) -> Any:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        queue = self.channels.setdefault(
            channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        _, message = await queue.get()
        return message


class MemoryWorld:
    """Who is alive, for every MemoryLiveness of one loopback fleet."""

    def __init__(self) -> None:
        self.watchers: dict[str, tuple[Callable[[], Iterable[str]], Callable[[set[str]], None]]]
        self.watchers = {}

    def declare_dead(self, *channels: str) -> None:
        """What the peers' heartbeat checks conclude once these heartbeats expired (found
        in one check)."""
        for channel in channels:
            self.watchers.pop(channel, None)
        for peers, on_dead in list(self.watchers.values()):
            dead = set(channels) & set(peers())
            if dead:
                on_dead(dead)


class MemoryLiveness:
    """:class:`channels_fleet.relay.liveness.Liveness` within one process."""

    def __init__(self, world: MemoryWorld) -> None:
        self.world = world
        self.channel = ""
        self.workers_full = False  # set by a test: every worker at its cap
        self._watch: Any = None  # (peers, on_dead), as started
        self._on_lost: Callable[[], None] = lambda: None

    @property
    def age(self) -> float:
        return 0.0

    @property
    def fresh(self) -> bool:
        return self.channel in self.world.watchers

    async def start(self, channel: str, peers: Callable[[], Iterable[str]],
                    on_dead: Callable[[set[str]], None], on_lost: Callable[[], None]) -> None:
        self.channel = channel
        self.world.watchers[channel] = (peers, on_dead)
        self._watch = (peers, on_dead)
        self._on_lost = on_lost

    def come_back(self) -> None:
        """What this process finds at its next beat after a stall for which a peer declared
        it dead (``world.declare_dead``, or not yet: then no peer of its own knows): it
        registers afresh and its ``on_lost`` runs."""
        self.world.watchers[self.channel] = self._watch
        self._on_lost()

    async def stop(self) -> None:
        self.world.watchers.pop(self.channel, None)


class EchoApp:
    """A raw ASGI app for WebSockets: accepts (with the client's first subprotocol), echoes
    each text frame as ``<worker channel>:<text>``, and records what every instance saw.

    Paths: ``/refuse-rehomed/`` refuses a re-homed connect, ``/stall-rehomed/`` never answers
    one (as an app stuck in its connect); ``/slow/`` takes 0.2 s a frame,
    ``/busy/`` 1 s; ``/mute/`` answers nothing.
    """

    def __init__(self) -> None:
        self.instances: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []

    def seen(self, index: int = -1) -> list[dict[str, Any]]:
        return self.instances[index][1]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen: list[dict[str, Any]] = []
        self.instances.append((scope, seen))
        worker = scope["fleet"]["worker"]
        while True:
            event = await receive()
            seen.append(event)
            if event["type"] == "websocket.connect":
                if scope["path"] == "/refuse-rehomed/" and scope["fleet"]["rehomed"]:
                    await send({"type": "websocket.close"})
                    continue
                if scope["path"] == "/stall-rehomed/" and scope["fleet"]["rehomed"]:
                    continue
                subprotocols = scope.get("subprotocols") or [None]
                await send({"type": "websocket.accept", "subprotocol": subprotocols[0]})
            elif event["type"] == "websocket.receive":
                if scope["path"] == "/mute/":
                    continue
                if scope["path"] in ("/slow/", "/busy/"):
                    await asyncio.sleep(0.2 if scope["path"] == "/slow/" else 1.0)
                await send({"type": "websocket.send", "text": f"{worker}:{event['text']}"})
            elif event["type"] == "websocket.disconnect":
                return


class Client:
    """One connection driven through the gateway's ASGI interface, as Daphne would drive it."""

    def __init__(self, gateway: Gateway, scope: dict[str, Any]) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(gateway(scope, self.inbox.get, self._send))

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.put_nowait(message)

    async def connect(self, timeout: float = 5) -> dict[str, Any]:
        """``websocket.connect``; the gateway's first answer (accept, close ...)."""
        self.inbox.put_nowait({"type": "websocket.connect"})
        return await self.next(timeout)

    def send_text(self, text: str) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": text})

    def request(self, body: bytes = b"") -> None:
        self.inbox.put_nowait({"type": "http.request", "body": body, "more_body": False})

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        """The next message the gateway wrote to this client."""
        return await asyncio.wait_for(self.sent.get(), timeout)

    async def texts(self, count: int, timeout: float = 5) -> list[str]:
        """The next ``count`` text frames (anything else fails the test)."""
        out = []
        for _ in range(count):
            message = await self.next(timeout)
            assert message["type"] == "websocket.send", message
            out.append(message["text"])
        return out

    async def close(self, code: int = 1000) -> None:
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": code})
        await asyncio.wait_for(self.task, 5)


class LoopbackFleet:
    """A Gateway and Hosts over one InMemoryChannelLayer; settings as keyword arguments
    (interface settings for the gateway, ``worker=`` a dict for every host)."""

    def __init__(self, app: Any, *, claim_timeout: float = 0.3, connect_capacity: int = 100,
                 worker: dict[str, Any] | None = None, **interface: Any) -> None:
        self.app = app
        self.layer = LoopbackLayer(
            capacity=1000, channel_capacity={wire.CONNECT_QUEUE: connect_capacity})
        self.world = MemoryWorld()
        self.gateway = Gateway(
            InterfaceSettings(redis_url=NOWHERE, claim_timeout=claim_timeout,
                              connect_capacity=connect_capacity, **interface),
            layer=self.layer, liveness=MemoryLiveness(self.world))
        self.worker_settings = {"app": "loopback:app", **(worker or {})}
        self.hosts: list[Host] = []

    async def start(self) -> LoopbackFleet:
        await self.gateway.start()
        return self

    async def add_host(self, **settings: Any) -> Host:
        """A new worker, taking connections."""
        host = Host(self.app, WorkerSettings(redis_url=NOWHERE,
                                             **{**self.worker_settings, **settings}),
                    layer=self.layer, liveness=MemoryLiveness(self.world))
        await host.start()
        self.hosts.append(host)
        return host

    async def kill(self, *hosts: Host) -> None:
        """What kill -9 does to workers: they go silent, then their peers find them dead (in
        one heartbeat check)."""
        for host in hosts:
            await host.side.relay.stop()  # nothing more leaves it, nothing more is read
            await host.stop()
            self.hosts.remove(host)
        self.world.declare_dead(*(host.side.channel for host in hosts))

    def client(self, path: str = "/ws/", *, subprotocols: Iterable[str] = (),
               http: bool = False) -> Client:
        scope: dict[str, Any] = {
            "type": "http" if http else "websocket", "path": path, "raw_path": path.encode(),
            "query_string": b"", "headers": [(b"host", b"loopback")],
            "client": ["127.0.0.1", 40000], "server": ["127.0.0.1", 8000],
        }
        if http:
            scope.update(method="GET", http_version="1.1", scheme="http")
        else:
            scope.update(subprotocols=list(subprotocols), scheme="ws")
        return Client(self.gateway, scope)

    async def stop(self) -> None:
        for host in list(self.hosts):
            await host.stop()
        await self.gateway.stop()
