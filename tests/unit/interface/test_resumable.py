"""Resumable sockets at the interface (docs/resume-protocol.md), against a scripted worker.

A real Gateway on the loopback layer; the worker is a bare relay end that takes the connect
envelopes and answers with the items a worker sends (the worker's own side has tests of its
own): what the client gets, what the owner gets, and when.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.loopback import NOWHERE, LoopbackLayer, MemoryLiveness, MemoryWorld

from channels_fleet.interface.client import DETACHED, FINISHED, OWNED
from channels_fleet.interface.gateway import Gateway
from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.observability.metrics import METRICS
from channels_fleet.relay import session_items as si
from channels_fleet.relay import wire
from channels_fleet.relay.relay import Relay
from channels_fleet.relay.sessions import SessionEntry
from channels_fleet.resume import envelope

pytestmark = pytest.mark.timeout(20)

SECRET = "k" * 40
APP_KINDS = (wire.EVENT, wire.GONE, wire.MESSAGE, wire.FENCE, si.DETACH, si.CLIENT_ACK,
             si.RESUME)


class RegistryLayer(LoopbackLayer):
    """The loopback layer with the few commands the session registry sends (SET/MGET/DEL)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keys: dict[str, str] = {}

    async def command(self, key: str, *args: Any) -> Any:
        name = args[0]
        if name == "SET":
            self.keys[key] = args[2]
            return "OK"
        if name == "MGET":
            return [self.keys.get(key)]
        assert name == "DEL"
        return int(self.keys.pop(key, None) is not None)


class Worker:
    """A scripted worker: takes envelopes, records the items it is sent, posts what it is told."""

    def __init__(self, layer: LoopbackLayer) -> None:
        self.layer = layer
        self.relay = Relay(layer, wire.WORKER_CHANNELS)
        self.got: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()

        self.relay.handle({kind: self._recorder(kind) for kind in APP_KINDS})

    def _recorder(self, kind: str) -> Any:
        async def record(claim: str, payload: Any, sender: str) -> None:
            self.got.put_nowait((kind, claim, payload))
        return record

    @property
    def channel(self) -> str:
        return self.relay.channel

    async def envelope(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.layer.receive(wire.CONNECT_QUEUE), 5)

    async def next(self, timeout: float = 5) -> tuple[str, str, Any]:
        return await asyncio.wait_for(self.got.get(), timeout)

    def post(self, iface: str, *items: list[Any]) -> None:
        for item in items:
            self.relay.post(iface, item, control=True)

    async def nothing(self, wait: float = 0.1) -> None:
        await asyncio.sleep(wait)
        assert self.got.empty(), self.got.get_nowait()


class Client:
    """One socket driven through the gateway's ASGI interface, as Daphne would."""

    def __init__(self, gateway: Gateway, subprotocols: list[str],
                 origin: str = "https://chat.example.com") -> None:
        headers = [(b"host", b"chat.example.com"), (b"origin", origin.encode())]
        if subprotocols:
            headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
        scope = {"type": "websocket", "path": "/ws/", "raw_path": b"/ws/", "query_string": b"",
                 "headers": headers, "client": ["127.0.0.1", 40000],
                 "server": ["127.0.0.1", 8000], "subprotocols": subprotocols, "scheme": "ws"}
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(gateway(scope, self.inbox.get, self._send))
        self.inbox.put_nowait({"type": "websocket.connect"})

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.put_nowait(message)

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        return await asyncio.wait_for(self.sent.get(), timeout)

    async def frame(self) -> Any:
        """The next message written, decoded (a websocket.send's envelope message)."""
        message = await self.next()
        assert message["type"] == "websocket.send", message
        return envelope.parse(message.get("text") or message["bytes"], from_server=True)

    def send(self, text: str) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": text})

    async def gone(self, code: int | None) -> None:
        event: dict[str, Any] = {"type": "websocket.disconnect"}
        if code is not None:
            event["code"] = code
        self.inbox.put_nowait(event)
        await asyncio.wait_for(self.task, 5)


class Fleet:
    def __init__(self, **interface: Any) -> None:
        self.layer = RegistryLayer(capacity=1000)
        self.world = MemoryWorld()
        settings = {"resume_key": SECRET, "claim_timeout": 0.5, **interface}
        self.gateway = Gateway(InterfaceSettings(redis_url=NOWHERE, **settings),
                               layer=self.layer, liveness=MemoryLiveness(self.world))
        self.worker = Worker(self.layer)

    @property
    def iface(self) -> str:
        return self.gateway.side.channel

    def client(self, subprotocols: list[str] | None = None, **kwargs: Any) -> Client:
        offered = envelope.offer(["chat.v2"]) if subprotocols is None else subprotocols
        return Client(self.gateway, offered, **kwargs)

    async def session(self) -> tuple[Client, str, str]:
        """A client on a new session, claimed and accepted: (client, claim, token)."""
        client = self.client()
        env = await self.worker.envelope()
        claim = env["conn"]
        self.worker.post(self.iface, [wire.CLAIM, claim, self.worker.channel],
                         [wire.SEND, claim, {"type": "websocket.accept",
                                             "subprotocol": "chat.v2"}])
        assert (await client.next())["subprotocol"] == envelope.SUBPROTOCOL
        hello = await client.frame()
        return client, claim, hello.session

    def conn(self) -> Any:
        return self.gateway.conns.values()[-1]


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    fleet = Fleet()
    await fleet.gateway.start()
    await fleet.worker.relay.start()
    yield fleet
    await fleet.worker.relay.stop()
    await fleet.gateway.stop()


def ack(claim: str, handled: int, taken: int) -> list[Any]:
    return [wire.ACK, "", [[claim, handled, taken]]]


def sent(claim: str, seq: int, text: str) -> list[Any]:
    return [wire.SEND, claim, {"type": "websocket.send", "text": text, si.FLEET_SEQ: seq}]


async def test_new_session__envelope_mark_hello_first_then_d_frames(fleet: Fleet) -> None:
    client = fleet.client()
    env = await fleet.worker.envelope()
    mark = env["session"]
    assert si.parse_session(mark) == mark and (mark["seq"], mark["ack"]) == (0, 0)
    assert env["scope"]["subprotocols"] == ["chat.v2"]  # the app's own only
    assert not any(v.startswith(b"channels-fleet") for _, v in env["scope"]["headers"])
    claim = env["conn"]
    fleet.worker.post(fleet.iface, [wire.CLAIM, claim, fleet.worker.channel],
                      [wire.SEND, claim, {"type": "websocket.accept", "subprotocol": "chat.v2"}],
                      sent(claim, 1, "one"), sent(claim, 2, "two"))
    accept = await client.next()
    assert accept == {"type": "websocket.accept", "subprotocol": envelope.SUBPROTOCOL}
    hello = await client.frame()
    assert hello.resumed is False and hello.ack == 0 and hello.protocol == "chat.v2"
    assert fleet.gateway.resume_key.verify(hello.session) == mark["id"]
    assert await client.frame() == envelope.Data(1, 0, "one")
    assert await client.frame() == envelope.Data(2, 0, "two")
    assert fleet.conn().session.seq == 2
    await client.gone(1000)


async def test_client_d__event_with_fleet_seq_then_client_ack__a_alone(fleet: Fleet) -> None:
    client, claim, _ = await fleet.session()
    fleet.worker.post(fleet.iface, sent(claim, 1, "s1"))
    await client.frame()
    client.send("D 1 1\nhello")
    assert await fleet.worker.next() == (wire.EVENT, claim, {
        "type": "websocket.receive", "text": "hello", si.FLEET_SEQ: 1})
    assert await fleet.worker.next() == (si.CLIENT_ACK, claim, 1)
    client.send("D 2 1\nagain")  # the same ack: no CLIENT_ACK
    assert (await fleet.worker.next())[2]["text"] == "again"
    fleet.worker.post(fleet.iface, sent(claim, 2, "s2"))
    await client.frame()
    client.send("A 2\n")
    assert await fleet.worker.next() == (si.CLIENT_ACK, claim, 2)
    await fleet.worker.nothing()
    await client.gone(1000)


@pytest.mark.parametrize("bad", ["hello", "H\n{}", "D 0 0\nx", "A 5\n", "X\n"])
async def test_a_bad_frame__closed_1002_and_the_owner_told_gone(fleet: Fleet, bad: str) -> None:
    client, claim, _ = await fleet.session()
    client.send(bad)
    assert await client.next() == {"type": "websocket.close", "code": 1002}
    assert await fleet.worker.next() == (wire.GONE, claim, 1002)
    await client.gone(1002)
    await fleet.worker.nothing()


async def test_clean_close__the_disconnect_event_as_today(fleet: Fleet) -> None:
    client, claim, _ = await fleet.session()
    await client.gone(1000)
    assert await fleet.worker.next() == (wire.EVENT, claim, {
        "type": "websocket.disconnect", "code": 1000})
    assert fleet.gateway.conns.values() == []


@pytest.mark.parametrize("code", [None, 1006, 1011])
async def test_lost_socket__detach_and_the_home_keeps_it_for_channel_messages(
        fleet: Fleet, code: int | None) -> None:
    client, claim, _ = await fleet.session()
    conn = fleet.conn()
    await client.gone(code)
    assert await fleet.worker.next() == (si.DETACH, claim, code or 1006)
    assert conn.state is DETACHED and fleet.gateway.conns.get(conn.id) is conn
    fleet.gateway._channel_message([conn.id], b"body")
    assert await fleet.worker.next() == (wire.MESSAGE, "", [b"body", [claim]])
    assert conn.unacked.frames == [{"type": wire.CHANNEL_MESSAGE, "body": b"body"}]  # until
    fleet.worker.post(fleet.iface, ack(claim, 1, 1))  # handled, for a next owner's replay
    await asyncio.sleep(0.05)
    assert conn.unacked.frames == []
    fleet.worker.post(fleet.iface, [si.SESSION_END, claim, [1006, "window"]])
    await asyncio.sleep(0.05)
    assert conn.state is FINISHED and fleet.gateway.conns.values() == []
    await fleet.worker.nothing()


async def test_app_close__x_then_its_close(fleet: Fleet) -> None:
    client, claim, _ = await fleet.session()
    fleet.worker.post(fleet.iface, [wire.SEND, claim, {"type": "websocket.close", "code": 4321}])
    assert await client.frame() == envelope.End()
    assert await client.next() == {"type": "websocket.close", "code": 4321}


async def test_app_returned_without_closing__x_then_1011(fleet: Fleet) -> None:
    client, claim, _ = await fleet.session()
    fleet.worker.post(fleet.iface, [wire.END, claim, None])
    assert await client.frame() == envelope.End()
    assert await client.next() == {"type": "websocket.close", "code": 1011}


async def test_interface_drain__b_then_1001_and_detach_when_not_resumed_in_time(
        fleet: Fleet) -> None:
    client, claim, _ = await fleet.session()
    assert await fleet.gateway.drain(1.0) == 1  # too short to wait for a resume
    assert await client.frame() == envelope.Back()
    assert await client.next() == {"type": "websocket.close", "code": 1001}
    assert await fleet.worker.next() == (si.DETACH, claim, 1001)
    await client.gone(1001)
    await fleet.worker.nothing()


async def test_interface_drain__b_no_d_after_it_client_frames_still_go_4001_on_resume(
        fleet: Fleet) -> None:
    client, claim, _ = await fleet.session()
    fleet.worker.post(fleet.iface, sent(claim, 1, "s1"))
    assert await client.frame() == envelope.Data(1, 0, "s1")
    client.send("D 1 1\nbefore B")
    assert (await fleet.worker.next())[2]["text"] == "before B"
    assert await fleet.worker.next() == (si.CLIENT_ACK, claim, 1)
    drain = asyncio.create_task(fleet.gateway.drain(5.0))
    assert await client.frame() == envelope.Back()
    # The owner's frames stay in its outbox (the resume replays them): neither D nor A.
    fleet.worker.post(fleet.iface, sent(claim, 2, "s2"), ack(claim, 1, 1))
    client.send("D 2 1\nin flight")  # sent before the client read B: still the owner's
    assert (await fleet.worker.next())[2]["text"] == "in flight"
    await asyncio.sleep(envelope.ACK_AFTER_S + 0.1)
    assert client.sent.empty() and not drain.done()
    fleet.worker.post(fleet.iface, [si.SUPERSEDE, claim, 4001])  # resumed elsewhere
    assert await client.next() == {"type": "websocket.close", "code": 4001}
    assert await asyncio.wait_for(drain, 3) == 0  # no 1001 close: the B'd socket resumed
    await client.gone(4001)
    await fleet.worker.nothing()  # no DETACH, no GONE: the session is the other socket's


async def test_interface_drain__a_client_dropping_its_b_socket_detaches__no_close_counted(
        fleet: Fleet) -> None:
    client, claim, _ = await fleet.session()
    drain = asyncio.create_task(fleet.gateway.drain(5.0))
    assert await client.frame() == envelope.Back()
    closes = dict(METRICS.status.closes)
    await client.gone(None)  # as the Python FleetSocket answers B: the TCP connection dropped
    assert await fleet.worker.next() == (si.DETACH, claim, 1006)
    assert await asyncio.wait_for(drain, 3) == 0
    assert METRICS.status.closes == closes  # its client comes back: nobody was disconnected
    await fleet.worker.nothing()


async def test_interface_drain__plain_and_unaccepted_sockets_closed_1001() -> None:
    fleet = Fleet()
    await fleet.gateway.start()
    await fleet.worker.relay.start()
    try:
        session, claim, _ = await fleet.session()
        plain = fleet.client(["chat.v2"])
        plain_claim = (await fleet.worker.envelope())["conn"]
        fleet.worker.post(fleet.iface, [wire.CLAIM, plain_claim, fleet.worker.channel],
                          [wire.SEND, plain_claim, {"type": "websocket.accept"}])
        await plain.next()
        unaccepted = fleet.client()
        await fleet.worker.envelope()
        drain = asyncio.create_task(fleet.gateway.drain(5.0))
        assert await plain.next() == {"type": "websocket.close", "code": 1001}
        assert await fleet.worker.next() == (wire.GONE, plain_claim, 1001)
        assert (await unaccepted.next())["type"] == "websocket.accept"  # to show its close
        assert await unaccepted.next() == {"type": "websocket.close", "code": 1001}
        assert await session.frame() == envelope.Back()
        fleet.worker.post(fleet.iface, [si.SUPERSEDE, claim, 4001])
        assert await session.next() == {"type": "websocket.close", "code": 4001}
        assert await asyncio.wait_for(drain, 3) == 2  # the plain one and the unaccepted one
        await fleet.worker.nothing()
    finally:
        await fleet.worker.relay.stop()
        await fleet.gateway.stop()


async def test_owner_acks__client_ack_in_d_frames_and_a_paced(fleet: Fleet) -> None:
    client, claim, _ = await fleet.session()
    fleet.worker.post(fleet.iface, sent(claim, 1, "s1"))
    await client.frame()
    for seq in range(1, 4):
        client.send(f"D {seq} 1\nc{seq}")
    for _ in range(3 + 1):  # the events and one CLIENT_ACK
        await fleet.worker.next()
    # Frames relayed under this claim: c1, c2, c3. The app took c1 and c2.
    fleet.worker.post(fleet.iface, ack(claim, 1, 2))
    await asyncio.sleep(0.05)
    assert fleet.conn().session.client_ack == 2
    fleet.worker.post(fleet.iface, sent(claim, 2, "s2"))
    assert await client.frame() == envelope.Data(2, 2, "s2")  # a D carries it: no A
    fleet.worker.post(fleet.iface, ack(claim, 3, 3))
    started = asyncio.get_running_loop().time()
    assert await client.frame() == envelope.Ack(3)  # after ACK_AFTER_S, no D meanwhile
    assert asyncio.get_running_loop().time() - started >= envelope.ACK_AFTER_S * 0.9
    # ACK_EVERY behind: an A at once.
    for seq in range(4, 4 + envelope.ACK_EVERY):
        client.send(f"D {seq} 2\nc{seq}")
    for _ in range(envelope.ACK_EVERY):
        await fleet.worker.next()
    taken = 3 + envelope.ACK_EVERY
    fleet.worker.post(fleet.iface, ack(claim, taken, taken))
    assert await client.frame() == envelope.Ack(3 + envelope.ACK_EVERY)
    await client.gone(1000)


async def resume_offer(fleet: Fleet, client_origin: str = "https://chat.example.com",
                       last: int = 2) -> tuple[Client, str, str, str]:
    """A session detached, its registry entry written (as its worker would): a client offers
    to resume it. Returns (the resuming client, the RESUME's claim, the old claim, token)."""
    old, claim, token = await fleet.session()
    session_id = fleet.gateway.resume_key.verify(token)
    await old.gone(None)
    assert (await fleet.worker.next())[0] == si.DETACH
    await fleet.gateway.sessions.registry.put(
        session_id, SessionEntry(fleet.worker.channel, claim, ""), ttl=60)
    client = fleet.client(envelope.offer(["chat.v2"], token, last), origin=client_origin)
    kind, new_claim, payload = await fleet.worker.next()
    assert (kind, payload) == (si.RESUME, [session_id, last, client_origin])
    assert new_claim != claim
    return client, new_claim, claim, token


async def test_resumed__accepted_hello_resumed_then_the_replayed_sends(fleet: Fleet) -> None:
    client, claim, old_claim, token = await resume_offer(fleet)
    assert client.sent.empty()  # not accepted before the worker answers
    fleet.worker.post(fleet.iface, [wire.CLAIM, claim, fleet.worker.channel],
                      [si.RESUMED, claim, [5, "chat.v2", "", "", ""]], sent(claim, 3, "r3"),
                      sent(claim, 4, "r4"))
    assert (await client.next())["subprotocol"] == envelope.SUBPROTOCOL
    assert await client.frame() == envelope.Hello(token, True, 5, "chat.v2")
    assert await client.frame() == envelope.Data(3, 5, "r3")
    assert await client.frame() == envelope.Data(4, 5, "r4")
    conn = fleet.gateway.conns.current(claim)
    assert conn.state is OWNED and conn.channel is None  # not its home
    client.send("D 6 4\nnext")
    assert (await fleet.worker.next())[2][si.FLEET_SEQ] == 6
    await client.gone(1006)  # a non-home interface forgets a detached socket at once
    assert await fleet.worker.next() == (si.CLIENT_ACK, claim, 4)
    assert await fleet.worker.next() == (si.DETACH, claim, 1006)
    assert fleet.gateway.conns.current(claim) is None
    assert fleet.gateway.conns.current(old_claim).state is DETACHED  # the home's stays


@pytest.mark.parametrize("reason", ["unknown", "origin", "unreplayable"])
async def test_no_session__a_new_session(fleet: Fleet, reason: str) -> None:
    client, claim, _, token = await resume_offer(fleet)
    fleet.worker.post(fleet.iface, [si.NO_SESSION, claim, reason])
    env = await fleet.worker.envelope()
    assert env["conn"] != claim and env["session"]["seq"] == 0 and "channel" in env
    assert env["session"]["id"] != fleet.gateway.resume_key.verify(token)
    fleet.worker.post(fleet.iface, [wire.CLAIM, env["conn"], fleet.worker.channel],
                      [wire.SEND, env["conn"], {"type": "websocket.accept"}])
    await client.next()
    hello = await client.frame()
    assert hello.resumed is False and hello.session != token
    await client.gone(1000)


async def test_no_answer_in_time__a_new_session(fleet: Fleet) -> None:
    client, claim, _, _ = await resume_offer(fleet)
    env = await fleet.worker.envelope()  # after the claim deadline
    assert env["conn"] != claim and env["session"]["ack"] == 0
    fleet.worker.post(fleet.iface, [si.RESUMED, claim, [0, "", "", "", ""]])  # too late: ignored
    await asyncio.sleep(0.05)
    assert client.sent.empty()
    await client.gone(1006)


async def test_unknown_or_forged_token__a_new_session_at_once(fleet: Fleet) -> None:
    forged = "A" * 43
    client = fleet.client(envelope.offer([], forged, 3))
    env = await fleet.worker.envelope()
    assert env["session"]["seq"] == 0
    await client.gone(1006)
    _, token = fleet.gateway.resume_key.issue()  # a real token of no live session
    client = fleet.client(envelope.offer([], token, 3))
    assert (await fleet.worker.envelope())["session"]["seq"] == 0
    await client.gone(1006)


async def test_supersede__4001_the_home_keeps_a_detached_conn_others_forget(
        fleet: Fleet) -> None:
    client, claim, _ = await fleet.session()
    conn = fleet.conn()
    fleet.worker.post(fleet.iface, [si.SUPERSEDE, claim, 4001])
    assert await client.next() == {"type": "websocket.close", "code": 4001}
    await client.gone(4001)
    assert conn.state is DETACHED  # the home: its channel's messages still go to the owner
    fleet.gateway._channel_message([conn.id], b"m")
    assert await fleet.worker.next() == (wire.MESSAGE, "", [b"m", [claim]])
    await fleet.worker.nothing()  # no disconnect, no DETACH, no GONE
    # A resumed (non-home) socket, superseded: forgotten.
    client, new_claim, _, _ = await resume_offer(fleet)
    fleet.worker.post(fleet.iface, [wire.CLAIM, new_claim, fleet.worker.channel],
                      [si.RESUMED, new_claim, [0, "", "", "", ""]])
    await client.next()
    await client.frame()
    fleet.worker.post(fleet.iface, [si.SUPERSEDE, new_claim, 4001])
    assert await client.next() == {"type": "websocket.close", "code": 4001}
    await client.gone(4001)
    assert fleet.gateway.conns.current(new_claim) is None
    await fleet.worker.nothing()


async def detached_at_home(fleet: Fleet) -> tuple[Any, str]:
    """A session's socket gone at its home: (its DETACHED conn, its claim)."""
    client, claim, _ = await fleet.session()
    conn = fleet.conn()
    await client.gone(None)
    assert (await fleet.worker.next())[0] == si.DETACH
    return conn, claim


async def test_owner_death__detached_conn_holds_until_the_next_owner_claims_it(
        fleet: Fleet) -> None:
    conn, claim = await detached_at_home(fleet)
    fleet.gateway._channel_message([conn.id], b"m0")  # the owner dies before handling it
    assert (await fleet.worker.next())[0] == wire.MESSAGE
    fleet.world.declare_dead(fleet.worker.channel)
    assert conn.state is DETACHED and conn.owner is None and conn.timer is not None
    fleet.gateway._channel_message([conn.id], b"m1")
    fleet.gateway._channel_message([conn.id], b"m2")
    await fleet.worker.nothing()  # held
    # The worker that took the session over (its socket re-homed elsewhere) claims it.
    other = Worker(fleet.layer)
    await other.relay.start()
    try:
        other.post(fleet.iface, [wire.CLAIM, claim, other.channel])
        assert await other.next() == (wire.EVENT, claim, {  # the dead owner's, first
            "type": wire.CHANNEL_MESSAGE, "body": b"m0", wire.REPLAYED: True})
        for body in (b"m1", b"m2"):  # then the held ones, in order
            assert await other.next() == (wire.EVENT, claim,
                                          {"type": wire.CHANNEL_MESSAGE, "body": body})
        assert conn.owner == other.channel and conn.timer is None
        fleet.gateway._channel_message([conn.id], b"m3")
        assert await other.next() == (wire.MESSAGE, "", [b"m3", [claim]])
        assert len(conn.unacked.frames) == 4  # kept until the new owner handles them
        other.post(fleet.iface, ack(claim, 4, 4))
        await asyncio.sleep(0.05)
        assert conn.unacked.frames == []
        assert other.channel in fleet.gateway.conns.owners()  # its death is watched
    finally:
        await other.relay.stop()


async def test_owner_death__no_claim_by_the_deadline__the_detached_conn_ends() -> None:
    fleet = Fleet(claim_timeout=0.02, heartbeat_ttl=0.05, heartbeat_interval=0.02)
    await fleet.gateway.start()
    await fleet.worker.relay.start()
    try:
        conn, _ = await detached_at_home(fleet)
        fleet.world.declare_dead(fleet.worker.channel)
        fleet.gateway._channel_message([conn.id], b"m1")
        await asyncio.sleep(0.3)  # 2 x 0.02 x 2 + 0.05
        assert conn.state is FINISHED and fleet.gateway.conns.values() == []
    finally:
        await fleet.worker.relay.stop()
        await fleet.gateway.stop()


async def test_resumed_away_from_home__keeps_the_homed_channel_and_home_in_its_rehomes(
        fleet: Fleet) -> None:
    client, claim, _, _ = await resume_offer(fleet)
    home, home_claim, channel = "fleet.interface.a!x", "h.1~1", "specific.fleeta!h.1"
    fleet.worker.post(fleet.iface, [wire.CLAIM, claim, fleet.worker.channel],
                      [si.RESUMED, claim, [0, "chat.v2", channel, home, home_claim]])
    await client.next()
    await client.frame()
    conn = fleet.gateway.conns.current(claim)
    assert conn.channel == channel and not conn.home
    fleet.world.declare_dead(fleet.worker.channel)
    env = await fleet.worker.envelope()
    assert env["channel"] == channel
    assert (env["session"]["home"], env["session"]["home_claim"]) == (home, home_claim)
    fleet.worker.post(fleet.iface, [wire.CLAIM, env["conn"], fleet.worker.channel],
                      [wire.KEPT, env["conn"], ["chat", ["room"]]])
    await asyncio.sleep(0.05)
    assert fleet.gateway.conns.current(env["conn"]).kept == [("chat", ["room"])]
    await client.gone(1006)  # detached: forgotten here, its channel left in its groups
    assert await fleet.worker.next() == (si.DETACH, env["conn"], 1006)
    assert fleet.gateway.conns.current(env["conn"]) is None


async def test_a_rehomed_session_socket_carries_its_numbering(fleet: Fleet) -> None:
    client, claim, _ = await fleet.session()
    fleet.worker.post(fleet.iface, sent(claim, 1, "s1"), sent(claim, 2, "s2"))
    await client.frame()
    await client.frame()
    client.send("D 1 2\nc1")
    await fleet.worker.next()
    await fleet.worker.next()  # CLIENT_ACK
    fleet.worker.post(fleet.iface, ack(claim, 1, 1), [wire.REHOME, claim, "drain"])
    env = await fleet.worker.envelope()
    assert env["rehomed"] == 1 and env["session"]["seq"] == 2 and env["session"]["ack"] == 1
    await client.gone(1000)


async def test_plain_sockets_unchanged__no_offer_or_no_key() -> None:
    for settings, offered in (({}, ["chat.v2"]), ({"resume_key": ""}, envelope.offer(["a"]))):
        fleet = Fleet(**settings)
        await fleet.gateway.start()
        await fleet.worker.relay.start()
        try:
            client = fleet.client(offered)
            env = await fleet.worker.envelope()
            assert "session" not in env and fleet.conn().session is None
            fleet.worker.post(fleet.iface, [wire.CLAIM, env["conn"], fleet.worker.channel],
                              [wire.SEND, env["conn"], {"type": "websocket.accept"}],
                              [wire.SEND, env["conn"], {"type": "websocket.send", "text": "t"}])
            assert (await client.next())["type"] == "websocket.accept"
            assert await client.next() == {"type": "websocket.send", "text": "t"}
            client.send("raw")
            assert (await fleet.worker.next())[2] == {"type": "websocket.receive", "text": "raw"}
            await client.gone(1006)
            assert (await fleet.worker.next())[2]["type"] == "websocket.disconnect"
        finally:
            await fleet.worker.relay.stop()
            await fleet.gateway.stop()
