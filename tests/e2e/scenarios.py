"""End-to-end scenarios shared by every way of running the stack (kind, local processes, ...).

Each scenario is an ``async def scenario_x(stack: Stack) -> dict`` that drives the demo chat over
real sockets, asserts what must hold, and returns what it measured (printed by the runner).
A runner supplies a ``Stack`` adapter; nothing here knows about Kubernetes or processes:

    class Stack(Protocol):
        base_url: str                       # public entry, e.g. "http://127.0.0.1:18080": an
                                            # Ingress, a NodePort, or one interface process
        chat: ChatProtocol                  # how the demo app speaks (defaults below)
        async def metrics(self, component: str) -> dict[str, str]
            # component in {"interface", "worker", "web"} -> {instance name: /metrics text}
        async def scale_workers(self, count: int) -> None
            # returns once `count` workers are ready (Kubernetes: scale + rollout status;
            # local: start or SIGTERM worker processes)
        async def stop_worker(self, instance: str) -> None
            # graceful stop of one worker, as `kubectl delete pod` or SIGTERM does; returns at once
        async def restart_interfaces(self) -> None
            # rolling restart of every interface (one at a time, a new one ready before an old
            # one drains); returns when done. Kubernetes: `kubectl rollout restart` + status.
        async def restart_workers(self) -> None
            # the same for every worker (an application deploy): Kubernetes `kubectl rollout
            # restart` of the worker Deployment + status; local: start a new worker, SIGTERM an
            # old one, in turn.

Usage (any runner):

    result = await scenario_chat_round_trip(stack)

Scenarios run in the order of ``ALL`` and leave the stack with one worker or more.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

# Close codes the stack promises (DESIGN.md): 1001 interface drain, 1012 worker gone (only
# when re-homing is off or no worker is left: by default a worker's sockets are re-homed).
GOING_AWAY, SERVICE_RESTART = 1001, 1012
ECHO_TIMEOUT = 5.0


@dataclass(frozen=True)
class ChatProtocol:
    """How the demo chat is spoken: a room's WebSocket path and the frame a message is sent as.

    A message is recognised in a received frame by its unique text, so the reply's envelope
    (``{"message": ...}``, a user name, a timestamp) does not matter.
    """

    room_path: str = "/ws/chat/{room}/"
    encode: Callable[[str], str] = field(default=lambda text: json.dumps({"message": text}))
    # Extra handshake headers, e.g. the Cookie of a signed-in session: the demo lets anonymous
    # users read a room but not post.
    headers: tuple[tuple[str, str], ...] = ()


class Stack(Protocol):
    base_url: str
    chat: ChatProtocol

    async def metrics(self, component: str) -> dict[str, str]: ...

    async def scale_workers(self, count: int) -> None: ...

    async def stop_worker(self, instance: str) -> None: ...

    async def restart_interfaces(self) -> None: ...

    async def restart_workers(self) -> None: ...


# --- clients -------------------------------------------------------------------------------


class ChatClient:
    """One WebSocket in a room; remembers every text frame and how the socket ended."""

    def __init__(self, stack: Stack, room: str, keepalive: float | None = None) -> None:
        # keepalive: WebSocket pings every that many seconds, the socket closed (1011) when one
        # goes unanswered as long: how a client library notices a peer that vanished.
        self.stack, self.room, self.keepalive = stack, room, keepalive
        self.frames: list[str] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._arrived = asyncio.Condition()
        #: Why each failed try of ``reopen`` failed, in order.
        self.open_failures: list[str] = []

    @property
    def url(self) -> str:
        parts = urlsplit(self.stack.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{self.stack.chat.room_path.format(room=self.room)}"

    async def open(self) -> ChatClient:
        # Origin = the host we talk to: the interface accepts same-host origins by default.
        origin = self.stack.base_url.rstrip("/")
        self._ws = await connect(self.url, origin=origin, open_timeout=10,  # type: ignore[arg-type]
                                 close_timeout=2, ping_interval=self.keepalive,
                                 ping_timeout=self.keepalive,
                                 additional_headers=list(self.stack.chat.headers) or None)
        self.frames, self.close_code = [], None
        self.closed.clear()
        self._reader = asyncio.create_task(self._read(self._ws))
        return self

    async def reopen(self, timeout: float = 20) -> ChatClient:
        """Reconnect as a client does after 1001/1012: retry while no interface accepts."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.open()
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                self.open_failures.append(repr(exc))
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                async with self._arrived:
                    self.frames.append(frame if isinstance(frame, str) else frame.decode())
                    self._arrived.notify_all()
        except ConnectionClosed:
            pass
        self.close_code = ws.close_code if ws.close_code is not None else 1006
        self.closed.set()
        async with self._arrived:
            self._arrived.notify_all()

    async def say(self, text: str) -> None:
        await self.send_frame(self.stack.chat.encode(text))

    async def send_frame(self, frame: str) -> None:
        assert self._ws is not None
        await self._ws.send(frame)

    async def wait_for(self, text: str, timeout: float = ECHO_TIMEOUT) -> bool:
        """True once a frame containing `text` arrived; False on timeout or close."""

        def seen() -> bool:
            return any(text in f for f in self.frames) or self.closed.is_set()

        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(seen), timeout)
            except TimeoutError:
                return False
        return any(text in f for f in self.frames)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


async def open_clients(stack: Stack, room: str, count: int) -> list[ChatClient]:
    clients = [ChatClient(stack, room) for _ in range(count)]
    await asyncio.gather(*(c.open() for c in clients))
    # One broadcast reaching everyone proves every consumer has joined the room's group.
    await broadcast_reaches_all(clients)
    return clients


async def broadcast_reaches_all(clients: list[ChatClient], timeout: float = 10) -> float:
    text = unique("hello")
    t0 = time.perf_counter()
    await clients[0].say(text)
    got = await asyncio.gather(*(c.wait_for(text, timeout) for c in clients))
    missing = got.count(False)
    closed = [c.close_code for c, ok in zip(clients, got, strict=True)
              if not ok and c.closed.is_set()]
    assert not missing, (f"{missing} of {len(clients)} clients never got the broadcast (of "
                         f"those, closed meanwhile with: {closed})")
    return time.perf_counter() - t0


async def room_works_for_all(clients: list[ChatClient], within: float = 15) -> float:
    """Seconds until one broadcast reaches every client within 2 s, broadcasting again until
    one does (how long until a room works for everyone after a move; what a move made a client
    miss is counted by ``Chatter``, not here)."""
    t0 = time.perf_counter()
    while True:
        try:
            await broadcast_reaches_all(clients, timeout=2)
            return time.perf_counter() - t0
        except AssertionError:
            if time.perf_counter() - t0 > within:
                raise


async def close_all(clients: list[ChatClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


class Chatter:
    """Numbered messages into a room at a steady rate while something moves its sockets, and
    what each client missed of them: server-to-client loss across a re-home.

    The senders take turns. A message counts as sent once its sender's ``say`` returned (its
    frame is on the way to the interface); one whose ``say`` raised (the socket closed) does
    not. ``missed()`` waits (polling, up to ``settle`` seconds) until every counted message
    reached every client, so a late message is not a lost one, then lists the (message,
    client) pairs still missing, counting only messages whose sender's socket is still open
    and only clients whose socket is still open (a closed socket's losses are its close
    code's business: each scenario checks those codes).

    Texts are ``<room>-m<5 digits>``: none is a prefix of another, so ``-m1`` is not found in
    ``-m10``.
    """

    def __init__(self, room: str, senders: list[ChatClient], rate: float = 10) -> None:
        self.room, self.senders, self.rate = room, senders, rate
        #: (text, sender) of every message whose say returned, in order.
        self.sent: list[tuple[str, ChatClient]] = []
        #: says that raised (the sender's socket had closed).
        self.unsent = 0
        self._pattern = re.compile(re.escape(room) + r"-m\d{5}")
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Chatter:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            sender = self.senders[n % len(self.senders)]
            text = f"{self.room}-m{n:05d}"
            n += 1
            try:
                await sender.say(text)
            except ConnectionClosed:
                self.unsent += 1
            else:
                self.sent.append((text, sender))
            await asyncio.sleep(1 / self.rate)

    def _missing(self, clients: list[ChatClient]) -> list[tuple[str, int, ChatClient]]:
        expected = [(t, s) for t, s in self.sent if not s.closed.is_set()]
        out = []
        for index, client in enumerate(clients):
            if client.closed.is_set():
                continue
            seen = {m for frame in client.frames for m in self._pattern.findall(frame)}
            out += [(t, index, s) for t, s in expected if t not in seen]
        return out

    async def missed(self, clients: list[ChatClient], settle: float = 10
                     ) -> tuple[int, str]:
        """How many (message, client) pairs never arrived, and a few of them, described."""
        deadline = time.monotonic() + settle
        while (missing := self._missing(clients)) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        index_of = {id(c): i for i, c in enumerate(clients)}
        examples = ", ".join(
            f"{t} to client {i} (sent by {index_of.get(id(s), 'a client outside them')})"
            for t, i, s in missing[:5])
        receivers = sum(not c.closed.is_set() for c in clients)
        counted = sum(not s.closed.is_set() for _, s in self.sent)
        return len(missing), (
            f"{len(missing)} of {counted} messages x {receivers} open clients never arrived "
            f"within {settle:.0f} s; e.g. {examples or 'none'}")


class ScenarioFailure(AssertionError):
    """A failed check of a scenario that measured first: ``result`` holds its figures, so a
    runner can still report them (tests/e2e/k8s/test_k8s.py)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(f"{message}; measured: {result}")
        self.result = result


def check(ok: bool, message: str, result: dict[str, Any]) -> None:
    if not ok:
        raise ScenarioFailure(message, result)


# --- metrics -------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)")


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric in a Prometheus text exposition, as (labels, value)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.append((labels, float(m.group(3))))
    return out


async def owned_per_worker(stack: Stack) -> dict[str, float]:
    texts = await stack.metrics("worker")
    return {name: sum(v for _, v in samples(text, "channels_fleet_owned_connections"))
            for name, text in texts.items()}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.5
                     ) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(step)
    return await check()


# --- scenarios -----------------------------------------------------------------------------


async def scenario_chat_round_trip(stack: Stack) -> dict[str, Any]:
    """Two clients in a room: a message from one reaches both (through interface and worker)."""
    room = unique("room")
    clients = await open_clients(stack, room, 2)
    try:
        timings = []
        for _ in range(20):
            timings.append(await broadcast_reaches_all(clients))
        timings.sort()
        return {"messages": 20, "p50_ms": round(timings[10] * 1000, 1),
                "max_ms": round(timings[-1] * 1000, 1)}
    finally:
        await close_all(clients)


async def scenario_workers_scale_out(stack: Stack, before: int = 10, after: int = 30
                                     ) -> dict[str, Any]:
    """Scale workers 1 -> 3: connections opened afterwards spread over the new workers."""
    await stack.scale_workers(1)
    room = unique("scale")
    old = await open_clients(stack, room, before)
    try:
        await stack.scale_workers(3)
        new = await open_clients(stack, room, after)
        try:
            owned: dict[str, float] = {}

            async def spread() -> bool:
                nonlocal owned
                owned = await owned_per_worker(stack)
                return len(owned) == 3 and sum(owned.values()) >= before + after

            await eventually(spread, 15)
            assert len(owned) == 3, f"expected 3 workers, metrics from {sorted(owned)}"
            busy = [w for w, n in owned.items() if n > 0]
            # The first worker holds the `before` connections; the new ones must own some of the
            # `after` ones, or scaling out did not add capacity.
            assert len(busy) >= 2, f"new connections did not spread: {owned}"
            await broadcast_reaches_all(old + new)
            return {"owned_per_worker": owned, "workers_with_connections": len(busy)}
        finally:
            await close_all(new)
    finally:
        await close_all(old)


async def scenario_worker_loss(stack: Stack, count: int = 20, rate: float = 40
                              ) -> dict[str, Any]:
    """Stop one worker (a scale-in) while clients chat: its sockets are re-homed on the other
    one (none closes), the room works for everyone (the consumers ran connect again there),
    and no client misses a message sent to the room meanwhile: ``missed_in_rehome_window``,
    (message, client) pairs that never arrived (``Chatter``), must be 0."""
    await stack.scale_workers(2)
    room = unique("loss")
    clients = await open_clients(stack, room, count)
    chatter = Chatter(room, clients, rate)
    try:
        owned = await owned_per_worker(stack)
        victim = max(owned, key=lambda w: owned[w])
        expected = int(owned[victim])
        assert expected > 0, f"no worker owns a connection: {owned}"
        chatter.start()
        await asyncio.sleep(1)  # chatter before the move, through it, and after it
        t0 = time.perf_counter()
        await stack.stop_worker(victim)

        async def moved() -> bool:
            now = await owned_per_worker(stack)
            return sum(n for w, n in now.items() if w != victim) >= count

        rehomed = await eventually(moved, 30, 0.25)
        elapsed = time.perf_counter() - t0
        closed = sorted(c.close_code or 1006 for c in clients if c.closed.is_set())
        assert rehomed, (
            f"the stopped worker's sockets were not re-homed in 30 s: {count} sockets, "
            f"owned before {owned} (stopped {victim}), now {await owned_per_worker(stack)}, "
            f"closed {closed}")
        assert not closed, f"{len(closed)} sockets closed ({closed}); expected re-homing"
        rejoined = await room_works_for_all(clients)
        await asyncio.sleep(1)
        await chatter.stop()
        missed, which = await chatter.missed(clients)
        result = {"victim_owned": expected, "closed": 0, "rehomed_after_s": round(elapsed, 2),
                  "room_works_after_s": round(elapsed + rejoined, 2),
                  "messages": len(chatter.sent), "missed_in_rehome_window": missed}
        check(missed == 0, f"messages missed while a stopped worker's sockets moved: {which}",
              result)
        return result
    finally:
        await chatter.stop()
        await close_all(clients)
        await stack.scale_workers(1)


async def scenario_worker_rollout(stack: Stack, count: int = 20, rate: float = 40
                                  ) -> dict[str, Any]:
    """Roll every worker (an application deploy) while clients chat: no socket closes, no
    client misses a message sent to the room during the rollout, and afterwards every client
    is in the room on the new workers.

    The clients take turns sending `rate` messages a second into the room throughout
    (a re-home's window is short: at a slow rate no message may fall in it).
    ``missed_in_rehome_window``: (message, client) pairs that never arrived (``Chatter``:
    messages whose send completed, from and to sockets that stayed open, after a settle of up
    to 10 s). The fleet promises none is missed across a re-home: it must be 0.
    """
    await stack.scale_workers(2)
    room = unique("wroll")
    clients = await open_clients(stack, room, count)
    chatter = Chatter(room, clients, rate).start()
    t0 = time.perf_counter()
    try:
        await stack.restart_workers()
        await asyncio.sleep(1)
    finally:
        await chatter.stop()
    rollout_s = time.perf_counter() - t0
    try:
        closed = sorted(c.close_code or 1006 for c in clients if c.closed.is_set())
        assert not closed, f"{len(closed)} sockets closed during the worker rollout: {closed}"
        missed, which = await chatter.missed(clients)
        result = {"sockets": count, "closed": 0, "messages": len(chatter.sent),
                  "missed_in_rehome_window": missed, "rollout_s": round(rollout_s, 1)}
        check(missed == 0, f"messages missed during the worker rollout: {which}", result)
        await room_works_for_all(clients)
        return result
    finally:
        await close_all(clients)
        await stack.scale_workers(1)


async def scenario_interface_rollout(stack: Stack, listeners: int = 10) -> dict[str, Any]:
    """Roll every interface: sockets end with 1001 (never 1006), and no message is lost.

    A sender sends numbered messages stop-and-wait (the next one only after the previous echo).
    A message is lost when its echo does not come while the socket stays open; a message whose
    socket is drained (1001) before the echo is resent on a new connection, as any reconnecting
    client does. Listeners in the same room reconnect after 1001 and must see the room again.
    ``disconnects_per_client`` counts each client's closes: 1 each when a client that reconnects
    always lands on a new interface (surge first, then drain), more when it lands on an old
    one that drains later.
    """
    room = unique("roll")
    listeners_ = await open_clients(stack, room, listeners)
    sender = await ChatClient(stack, room).open()
    stats = {"sent": 0, "echoed": 0, "resent_after_drain": 0, "lost": 0, "reconnects": 0}
    codes: list[int] = []
    per_client = [0] * (listeners + 1)  # the sender is the last one
    done = asyncio.Event()

    async def send_loop() -> None:
        nonlocal sender
        seq = 0
        while not done.is_set():
            text = f"{room}-m{seq}"
            try:
                await sender.say(text)
            except ConnectionClosed:
                pass  # drained between two messages: the check below reconnects
            stats["sent"] += 1
            if await sender.wait_for(text):
                stats["echoed"] += 1
                seq += 1
                await asyncio.sleep(0.05)
                continue
            if sender.closed.is_set():
                codes.append(sender.close_code or 1006)
                per_client[listeners] += 1
                stats["resent_after_drain"] += 1
                stats["reconnects"] += 1
                sender = await ChatClient(stack, room).reopen()
            else:
                stats["lost"] += 1
                seq += 1

    async def listener_loop(index: int, client: ChatClient) -> None:
        while not done.is_set():
            closed = asyncio.ensure_future(client.closed.wait())
            stop = asyncio.ensure_future(done.wait())
            await asyncio.wait({closed, stop}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            stop.cancel()
            if client.closed.is_set() and not done.is_set():
                codes.append(client.close_code or 1006)
                per_client[index] += 1
                stats["reconnects"] += 1
                await client.reopen()

    tasks = [asyncio.create_task(send_loop())]
    tasks += [asyncio.create_task(listener_loop(i, c)) for i, c in enumerate(listeners_)]
    t0 = time.perf_counter()
    try:
        await stack.restart_interfaces()
        await asyncio.sleep(2)  # traffic on the new interfaces too
    finally:
        done.set()
        await asyncio.gather(*tasks, return_exceptions=False)
    rollout_s = time.perf_counter() - t0
    try:
        # A socket drained just as the loops stopped: count its code, reconnect it.
        for index, client in enumerate([*listeners_, sender]):
            if client.closed.is_set():
                codes.append(client.close_code or 1006)
                per_client[index] += 1
                await client.reopen()
        bad = sorted({c for c in codes if c != GOING_AWAY})
        assert not bad, f"sockets ended with {bad} during the rollout, expected only 1001"
        assert stats["lost"] == 0, f"messages lost during the rollout: {stats}"
        assert stats["echoed"] > 0
        await broadcast_reaches_all([*listeners_, sender], timeout=15)
        return {**stats, "close_codes": sorted(set(codes)), "rollout_s": round(rollout_s, 1),
                "disconnects_per_client": {"min": min(per_client), "max": max(per_client)}}
    finally:
        await close_all([*listeners_, sender])


async def worker_of(client: ChatClient, timeout: float = 5) -> str | None:
    """The worker serving a socket, from the demo's status frame (``{"type": "status"}``);
    None when no answer comes in time (e.g. while the socket is handed to another worker)."""
    before = len(client.frames)
    await client.send_frame(json.dumps({"type": "status"}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in client.frames[before:]:
            data = json.loads(frame)
            if data.get("type") == "status":
                return str(data["worker"])
        await asyncio.sleep(0.1)
    return None


async def scenario_worker_kill_under_load(stack: Stack, count: int = 21, rate: float = 20
                                          ) -> dict[str, Any]:
    """Stop the busier of 2 workers while a client of the other posts `rate` messages a second:
    within 5 s each of its sockets is re-homed (still open, served by another worker) or closed
    with 1012, the clients of the other worker miss no message (``collateral_lost``), and
    neither do the re-homed ones (``missed_in_rehome_window``): both count (message, client)
    pairs that never arrived (``Chatter``) and must be 0.

    Sockets are grouped by the worker their status frame names; an odd `count` makes the two
    groups differ in size, so the busier pod (by its metrics) is the bigger group."""
    await stack.scale_workers(2)
    room = unique("kill")
    clients = await open_clients(stack, room, count)
    chatter: Chatter | None = None
    try:
        owned: dict[str, float] = {}

        async def settled() -> bool:
            nonlocal owned
            owned = await owned_per_worker(stack)
            return len(owned) == 2 and sum(owned.values()) == count

        assert await eventually(settled, 15), f"workers do not own the {count} sockets: {owned}"
        victim = max(owned, key=lambda w: owned[w])
        homes = await asyncio.gather(*(worker_of(c) for c in clients))
        assert None not in homes, "a socket did not say which worker serves it"
        sizes = {home: homes.count(home) for home in homes}
        victim_home = next((h for h, n in sizes.items() if n == owned[victim]), None)
        assert victim_home and len(sizes) == 2, f"sockets per worker {sizes}, metrics {owned}"
        on_victim = [c for c, h in zip(clients, homes, strict=True) if h == victim_home]
        others = [c for c, h in zip(clients, homes, strict=True) if h != victim_home]

        chatter = Chatter(room, [others[0]], rate).start()
        await asyncio.sleep(1)
        t0 = time.perf_counter()
        stopped_after = len(chatter.sent)
        await stack.stop_worker(victim)

        async def handled(client: ChatClient) -> bool:
            if client.closed.is_set():
                return True
            home = await worker_of(client, timeout=0.5)
            return home is not None and home != victim_home

        async def all_handled() -> bool:
            return all(await asyncio.gather(*(handled(c) for c in on_victim)))

        in_time = await eventually(all_handled, 5, 0.25)
        handled_s = time.perf_counter() - t0
        await asyncio.sleep(2)
        await chatter.stop()
        assert in_time, "the stopped worker's sockets were not re-homed or closed within 5 s"
        codes = sorted({c.close_code or 1006 for c in on_victim if c.closed.is_set()})
        assert set(codes) <= {SERVICE_RESTART}, f"sockets of the stopped worker closed with {codes}"
        # Late is not lost: a worker busy taking over sockets may deliver some seconds late
        # (each count waits up to 10 s for every message to arrive).
        lost, lost_which = await chatter.missed(others)
        missed, missed_which = await chatter.missed(on_victim)
        result = {"victim_sockets": len(on_victim), "others": len(others),
                  "messages": len(chatter.sent),
                  "closed_1012": sum(c.closed.is_set() for c in on_victim),
                  "handled_s": round(handled_s, 2), "collateral_lost": lost,
                  "missed_in_rehome_window": missed}
        check(lost == 0, f"clients of the other worker lost messages (the victim stopped after "
              f"message {stopped_after}): {lost_which}", result)
        check(missed == 0, f"re-homed clients of the stopped worker missed messages (it "
              f"stopped after message {stopped_after}): {missed_which}", result)
        return result
    finally:
        if chatter is not None:
            await chatter.stop()
        await close_all(clients)
        await stack.scale_workers(1)


async def scenario_long_poll_round_trip(stack: Stack) -> dict[str, Any]:
    """HTTP long polling (the page's fallback without WebSockets): a message posted with
    ``POST /poll/<room>/`` reaches a waiting ``GET /poll/<room>/`` and a WebSocket in the room,
    and one posted on the WebSocket reaches the next poll."""
    room = unique("poll")
    socket = (await open_clients(stack, room, 1))[0]
    headers = {"Origin": stack.base_url.rstrip("/"), **dict(stack.chat.headers)}
    url = f"{stack.base_url.rstrip('/')}/poll/{room}/"

    async def poll_while(post: Callable[[], Awaitable[None]]) -> tuple[int, str]:
        waiting = asyncio.create_task(asyncio.to_thread(http_request, "GET", url, headers))
        await asyncio.sleep(0.5)  # the GET has joined the room's group
        await post()
        return await waiting

    try:
        rounds = []
        for i in range(5):
            text = unique(f"poll{i}")

            async def post_json(text: str = text) -> None:
                status, body = await asyncio.to_thread(
                    http_request, "POST", url, {**headers, "Content-Type": "application/json"},
                    json.dumps({"message": text}).encode())
                assert status == 202, f"POST {url}: {status} {body}"

            t0 = time.perf_counter()
            status, body = await poll_while(post_json)
            rounds.append(time.perf_counter() - t0)
            assert status == 200 and text in body, f"GET {url}: {status} {body[:200]}"
            assert await socket.wait_for(text), "a long-poll post did not reach the WebSocket"
        text = unique("ws")
        status, body = await poll_while(lambda: socket.say(text))
        assert status == 200 and text in body, f"GET {url} after a WebSocket post: {status}"
        rounds.sort()
        return {"polls": len(rounds) + 1, "p50_ms": round(rounds[len(rounds) // 2] * 1000, 1)}
    finally:
        await close_all([socket])


def http_request(method: str, url: str, headers: dict[str, str], body: bytes | None = None
                 ) -> tuple[int, str]:
    """One blocking HTTP request (run in a thread): status and body, errors included."""
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=40) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def scenario_queue_depth_metric(stack: Stack) -> dict[str, Any]:
    """The shared work queue's depth is on /metrics, and rises while no worker takes connects."""
    depth_name = "channels_fleet_work_queue_depth"

    async def depths() -> list[float]:
        out = []
        for component in ("interface", "worker"):
            for text in (await stack.metrics(component)).values():
                out += [v for labels, v in samples(text, depth_name)
                        if labels.get("queue") == "fleet.connect"]
        return out

    seen = await depths()
    assert seen, f"no {depth_name}{{queue=\"fleet.connect\"}} on any interface or worker /metrics"
    # With no worker, connects wait in the queue (until the claim deadline refuses them).
    await stack.scale_workers(0)
    waiting = [ChatClient(stack, unique("queue")) for _ in range(5)]
    pending = [asyncio.create_task(c.open()) for c in waiting]
    peak = 0.0
    try:

        async def risen() -> bool:
            nonlocal peak
            peak = max([peak, *await depths()])
            return peak >= 1

        assert await eventually(risen, 10, 0.25), f"{depth_name} never rose above 0"
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await close_all(waiting)
        await stack.scale_workers(1)
    return {"depth_idle": max(seen), "depth_peak_without_workers": peak}


ALL = [
    scenario_chat_round_trip,
    scenario_long_poll_round_trip,
    scenario_queue_depth_metric,
    scenario_workers_scale_out,
    scenario_worker_loss,
    scenario_worker_kill_under_load,
    scenario_worker_rollout,
    scenario_interface_rollout,
]
