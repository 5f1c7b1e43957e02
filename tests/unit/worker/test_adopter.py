"""worker/adopter.py: two workers' adopters over one store (the relay's Redis: the hash and the
lock) and one app layer (the dead home's LIST), with real app instances and sessions
(session_world.py): who holds the lock, where each popped message goes, names not (yet) in
the hash, the end of an adoption and a drained holder's successor."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from session_world import I1, I2, WORKER, Store, World, settle

from channels_fleet.layers.homing import HomedChannel
from channels_fleet.observability.metrics import METRICS
from channels_fleet.relay import wire
from channels_fleet.relay.session_items import session_mark
from channels_fleet.worker import adopter as adopter_module
from channels_fleet.worker.adopter import HomeAdopter, adopt_key, home_key
from channels_fleet.worker.instance import AppInstance

W2 = "fleet.worker.w2!2"
INBOX = "specific.fleeta!"  # I1 = fleet.iface.a!1: its homed names are specific.fleet1!...
HOME = home_key(I1, "fleet")
LOCK = adopt_key(I1, "fleet")


class HashStore(Store):
    """The relay layer's command() over dicts: the registry's strings, and the adopter's hash
    and lock (SET NX PX, the two scripts, HSET/HDEL/HGETALL/HLEN/PEXPIRE)."""

    def __init__(self) -> None:
        super().__init__()
        self.hashes: dict[str, dict[str, str]] = {}
        self.log: list[tuple[Any, ...]] = []

    async def command(self, key: str, *args: Any) -> Any:
        self.log.append(args)
        op = args[0]
        if op == "SET" and "NX" in args:
            if args[1] in self.data:
                return None
            self.data[args[1]] = args[2]
            return True
        if op == "EVAL":
            held = self.data.get(args[3]) == args[4]
            if held and args[1] == adopter_module.RELEASE:
                del self.data[args[3]]
            return int(held)
        if op == "HSET":
            self.hashes.setdefault(args[1], {})[args[2]] = args[3]
            return 1
        if op == "HDEL":
            return int(self.hashes.get(args[1], {}).pop(args[2], None) is not None)
        if op == "HGETALL":
            return dict(self.hashes.get(args[1], {}))
        if op == "HLEN":
            return len(self.hashes.get(args[1], {}))
        if op == "PEXPIRE":
            return 1
        return await super().command(key, *args)


class AppLayer:
    """The app's channel layer as the adopter uses it: the home's LIST."""

    prefix = "asgi"

    def __init__(self) -> None:
        self.list: list[tuple[list[str], bytes]] = []

    async def receive_all(self, inbox: str, busy: bool = False) -> list[tuple[list[str], bytes]]:
        assert busy and inbox == INBOX
        taken, self.list = self.list, []
        return taken

    def decode(self, body: bytes) -> dict[str, Any]:
        return {"type": "chat.message", "text": body.decode()}

    def push(self, body: str, *conns: str) -> None:
        self.list.append(([INBOX + c for c in conns], body.encode()))


class Worker:
    """One worker: a World (real instances, keeper) and its adopter on the shared store."""

    def __init__(self, channel: str, store: HashStore, layer: AppLayer) -> None:
        self.world = World()
        self.world.side.channel = channel
        self.world.side.layer = store  # type: ignore[assignment]
        self.layer = layer
        self.adopter = HomeAdopter(self.world.side, self.world.settings,  # type: ignore[arg-type]
                                   sessions=self.world.keeper.sessions.values)

    async def session(self, conn: str, sid: str, home: str = I1) -> AppInstance:
        instance = await self.world.open(mark=session_mark(sid), claim=f"{conn}~1", iface=home)
        instance.homed = HomedChannel(INBOX + conn, lambda layer: True)
        assert instance.homed.take(self.layer)
        return instance

    def channel_messages(self) -> list[str]:
        return [e["text"] for e in self.world.app.seen if e.get("type") == "chat.message"]


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adopter_module, "ADOPT_TTL", 0.3)
    monkeypatch.setattr(adopter_module, "REREAD", 0.02)
    monkeypatch.setattr(adopter_module, "IDLE_STOP", 0.2)
    monkeypatch.setattr(adopter_module, "POLL", 0.01)


@pytest.fixture
async def pair() -> Any:
    store, layer = HashStore(), AppLayer()
    workers = Worker(WORKER, store, layer), Worker(W2, store, layer)
    for worker in workers:
        worker.adopter.reroute_wait = 0.3  # a name not in the hash waits this long
    yield store, layer, workers
    for worker in workers:
        await worker.adopter.stop()
        await worker.world.stop()


async def until(check: Any, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.01)


def sid(n: int) -> str:
    return f"{n:032x}"


async def test_one_holder__its_own_sessions_directly_uncounted__others_as_a_message_item(
        pair: Any) -> None:
    store, layer, (w1, w2) = pair
    mine = await w1.session("c1", sid(1))
    await w2.session("c2", sid(2))
    assert w1.adopter.watched() == {I1}  # its sessions' home, watched while alive
    w1.adopter.homes_dead({I1})
    await settle()
    assert store.data[LOCK] == WORKER and w1.adopter.watched() == set()
    w2.adopter.homes_dead({I1})
    await settle()
    assert store.hashes[HOME] == {INBOX + "c1": f"{WORKER} c1~1", INBOX + "c2": f"{W2} c2~1"}
    before = METRICS.adopted_messages._value.get()
    for n in range(3):
        layer.push(f"m{n}", "c1", "c2")
    await until(lambda: len(w1.channel_messages()) == 3)
    assert w1.channel_messages() == ["m0", "m1", "m2"]
    assert mine.taken == 0  # not counted for the interface's ACKs (UNCOUNTED)
    items = [item for dest, item in w1.world.relay.posts if dest == W2]
    assert items == [[wire.MESSAGE, "", [f"m{n}".encode(), ["c2~1"]]] for n in range(3)]
    assert METRICS.adopted_messages._value.get() - before == 6
    assert store.data[LOCK] == WORKER  # w2 competes, w1 keeps it (refreshed)
    await asyncio.sleep(0.4)
    assert store.data[LOCK] == WORKER


async def test_a_name_written_late_is_found__one_never_written_is_dropped_counted(
        pair: Any) -> None:
    store, layer, (w1, w2) = pair
    await w1.session("c1", sid(1))
    late = await w2.session("c2", sid(2))
    w1.adopter.homes_dead({I1})
    await settle()
    dropped = METRICS.messages_dropped.labels("other")._value.get()
    layer.push("early", "c2", "gone")
    await asyncio.sleep(0.05)
    w2.adopter.homes_dead({I1})  # w2 found the home dead later: within reroute_wait
    await until(lambda: any(dest == W2 for dest, _ in w1.world.relay.posts), 1.0)
    assert [item for dest, item in w1.world.relay.posts if dest == W2] == [
        [wire.MESSAGE, "", [b"early", ["c2~1"]]]]
    await until(lambda: METRICS.messages_dropped.labels("other")._value.get() > dropped)
    assert METRICS.messages_dropped.labels("other")._value.get() - dropped == 1
    assert late.session is not None and late.session.ended is None


async def test_sessions_end__fields_go__the_holder_lets_go_and_forgets_the_home(
        pair: Any) -> None:
    store, layer, (w1, w2) = pair
    one = await w1.session("c1", sid(1))
    two = await w2.session("c2", sid(2))
    for worker in (w1, w2):
        worker.adopter.homes_dead({I1})
    await settle()
    # The ends the host routes to the adopter (Host._session_ended): the app's, the client's.
    w1.adopter.forget(one)
    one.end_session(1000, "app")
    w2.adopter.forget(two)
    two.end_session(1000, "client")
    await settle()
    assert store.hashes[HOME] == {}
    await until(lambda: LOCK not in store.data and not w1.adopter.homes and not w2.adopter.homes)


async def test_a_drained_holder_lets_go__the_other_worker_takes_over(pair: Any) -> None:
    store, layer, (w1, w2) = pair
    await w1.session("c1", sid(1))
    await w2.session("c2", sid(2))
    w1.adopter.homes_dead({I1})
    await settle()
    w2.adopter.homes_dead({I1})
    await settle()
    assert store.data[LOCK] == WORKER
    await w1.adopter.stop()
    assert LOCK not in store.data
    await until(lambda: store.data.get(LOCK) == W2, 1.0)
    layer.push("later", "c2")
    await until(lambda: w2.channel_messages() == ["later"])


async def test_a_session_whose_home_lives_is_not_touched__nor_anything_while_draining(
        pair: Any) -> None:
    store, layer, (w1, w2) = pair
    await w1.session("c1", sid(1), home=I2)  # homed on a live interface
    w1.adopter.homes_dead({I1})
    await w2.session("c2", sid(2))
    w2.world.side.draining = True  # its sessions end or move: another worker adopts
    w2.adopter.homes_dead({I1})
    await settle()
    assert not w1.adopter.homes and w1.adopter.watched() == {I2}
    assert not w2.adopter.homes
    assert [args[0] for args in store.log if args[0] in ("HSET", "EVAL") or "NX" in args] == []


async def test_the_holder_lets_go_when_the_hash_is_empty__even_while_strays_keep_coming(
        pair: Any) -> None:
    store, layer, (w1, _) = pair
    one = await w1.session("c1", sid(1))
    w1.adopter.homes_dead({I1})
    await settle()
    w1.adopter.forget(one)
    one.end_session(1000, "app")
    for n in range(60):  # a group member nobody serves: dropped, it keeps no holder alive
        layer.push(f"stray{n}", "gone")
        await asyncio.sleep(0.01)
        if LOCK not in store.data:
            break
    assert LOCK not in store.data and not w1.adopter.homes
