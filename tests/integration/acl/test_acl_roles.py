"""Every role on a real Redis whose users are exactly docs/redis-acl.md's lines, default user off.

The ACL lines are read from the docs (the block after its ``acl-lines`` marker), so the docs
and this test cannot drift. Each role runs its real operations through the real code: the
layer (worker, web), the relay between an interface and a worker with their heartbeats, peer
watch and worker room, the interface's homed channels, the queue exporter and
``fleet_status()``. Then one rule less: the one clear line naming the command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import acl_lines
from support.acl_lines import documented_lines
from support.acl_state import fresh_acl_state  # noqa: F401  (autouse)
from support.relay_round_trip import relay_round_trip

from channels_fleet import fleet_status, redis_wait
from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.exceptions import RedisPermissionError
from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.layers import RedisClusterChannelLayer, acl
from channels_fleet.observability.metrics import FleetMetrics
from channels_fleet.observability.queues import QueueCollector
from channels_fleet.relay import wire
from channels_fleet.relay.heartbeat import Heartbeat
from channels_fleet.relay.relay import relay_layer
from channels_fleet.worker.settings import WorkerSettings

pytestmark = pytest.mark.timeout(90)

PASSWORD = "acl-test-password"
ADMIN = ("fleet-admin", "admin-test-password")


def with_password(rules: list[str]) -> list[str]:
    return acl_lines.with_password(rules, PASSWORD)


class AclRedis:
    """A real Redis (single, or every node of a cluster) with the documented users."""

    def __init__(self, local: LocalRedis) -> None:
        self.local = local
        self.ports = [node.port for node in local.nodes]
        self.is_cluster = local.is_cluster

    def admin(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, username=ADMIN[0], password=ADMIN[1])

    def set_user(self, name: str, rules: list[str]) -> None:
        for port in self.ports:
            with self.admin(port) as client:
                client.execute_command("ACL", "SETUSER", name, *rules)

    def refusals(self) -> set[tuple[str, str]]:
        """(user, command or key) of every refusal in the ACL LOGs since the last call."""
        seen = set()
        for port in self.ports:
            with self.admin(port) as client:
                for entry in client.acl_log():
                    seen.add((entry["username"], entry["object"]))
                client.acl_log_reset()
        return seen

    def calls(self, command: str) -> int:
        """How often ``command`` ran on every node (INFO commandstats), since start."""
        total = 0
        for port in self.ports:
            with self.admin(port) as client:
                total += client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)
        return total

    def url(self, user: str) -> str:
        return f"redis://{user}:{PASSWORD}@127.0.0.1:{self.ports[0]}"

    def urls(self, role: str) -> list[str]:
        return [self.url(f"fleet-{role}")]


@pytest.fixture(scope="module", params=["single", "cluster"])
def acl_redis(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    """Redis with the four documented users, an admin for the test, the default user off."""
    cluster = request.param == "cluster"
    local = LocalRedis(tmp_path_factory.mktemp(f"acl-{request.param}"),
                       masters=3 if cluster else 1, replicas=0).start()
    try:
        for node in local.nodes:
            with redis.Redis(port=node.port) as client:
                client.execute_command("ACL", "SETUSER", ADMIN[0], "on", f">{ADMIN[1]}",
                                       "~*", "&*", "+@all")
        server = AclRedis(local)
        for role, rules in documented_lines().items():
            server.set_user(f"fleet-{role}", with_password(rules))
        server.set_user("default", ["off"])
        yield server
    finally:
        local.stop()


#: Refused and done without, on purpose (docs/redis-acl.md): CLIENT ID (for CLIENT UNBLOCK);
#: CLIENT SETINFO, which redis-py sends on Redis 7.2+ / Valkey and goes on without.
EXPECTED_REFUSALS = {"client|id", "client|setinfo"}


@pytest.fixture
def no_refusals(acl_redis: AclRedis) -> Iterator[None]:
    """The test's operations are refused nothing but EXPECTED_REFUSALS (the server's ACL LOG)."""
    acl_redis.refusals()
    yield
    refused = {entry for entry in acl_redis.refusals() if entry[1] not in EXPECTED_REFUSALS}
    assert not refused, f"refused by the documented ACLs: {sorted(refused)}"


@pytest.fixture
async def layers(acl_redis: AclRedis) -> AsyncIterator[list[RedisClusterChannelLayer]]:
    made: list[RedisClusterChannelLayer] = []
    yield made
    for layer in made:
        await layer.close_pools()


def test_the_default_user_is_off(acl_redis: AclRedis) -> None:
    with pytest.raises(redis.AuthenticationError), \
            redis.Redis(port=acl_redis.ports[0], retry=Retry(NoBackoff(), 0)) as client:
        client.ping()


@pytest.mark.usefixtures("no_refusals")
async def test_worker_and_web__send_receive_groups_on_the_project_layer(
        acl_redis: AclRedis, layers: list[RedisClusterChannelLayer],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    worker = RedisClusterChannelLayer(hosts=acl_redis.urls("worker"), expiry=10)
    web = RedisClusterChannelLayer(hosts=acl_redis.urls("web"), expiry=10)
    layers += [worker, web]
    # A shared channel, from the web tier to a worker.
    await web.send("chat.jobs", {"n": 1})
    assert await worker.receive("chat.jobs") == {"n": 1}
    # A consumer's own channel, in a group; the web tier sends to the group.
    mine = await worker.new_channel()
    await worker.group_add("room", mine)
    await web.group_send("room", {"type": "chat.message", "text": "hi"})
    assert await worker.receive(mine) == {"type": "chat.message", "text": "hi"}
    await worker.group_discard("room", mine)
    await web.group_send("room", {"type": "chat.message", "text": "nobody"})
    # Prefetched messages nobody took go back to their LIST (LPUSH) when the loop closes;
    # a receive given up then waits out its BLMPOP (CLIENT UNBLOCK is not granted).
    for n in range(3):
        await web.send("chat.jobs", {"n": n})
    assert await worker.receive("chat.jobs") == {"n": 0}
    pending = asyncio.ensure_future(worker.receive("chat.idle"))
    await asyncio.sleep(0.2)
    pending.cancel()
    lpush = acl_redis.calls("lpush")
    await worker.close_pools()
    assert acl_redis.calls("lpush") > lpush  # the two prefetched went back
    again = RedisClusterChannelLayer(hosts=acl_redis.urls("worker"), expiry=10)
    layers.append(again)
    assert [await again.receive("chat.jobs") for _ in range(2)] == [{"n": 1}, {"n": 2}]
    wake = [r for r in caplog.records if r.name == acl.__name__]
    assert len(wake) == 1 and wake[0].levelno == logging.INFO
    assert "Redis refused CLIENT ID" in wake[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def settings(cls: type, acl_redis: AclRedis, role: str, name: str, **more: Any) -> Any:
    more.setdefault("redis_url", tuple(acl_redis.urls(role)))
    return cls(metrics_port=0, name=name, heartbeat_interval=0.2, heartbeat_ttl=0.6, **more)


@pytest.mark.usefixtures("no_refusals")
async def test_interface_and_worker__relay_round_trip_heartbeats_homed_channels__exporter_reads(
        acl_redis: AclRedis, layers: list[RedisClusterChannelLayer],
        caplog: pytest.LogCaptureFixture) -> None:
    iface_settings = settings(InterfaceSettings, acl_redis, "interface", "i1")
    worker_settings = settings(WorkerSettings, acl_redis, "worker", "w1", app="unused:app")
    with caplog.at_level(logging.INFO):
        async with relay_round_trip(iface_settings, worker_settings, layers) as relay:
            # Beats, the peer watch and the worker room go on for a few beats.
            await asyncio.sleep(1.0)
            room = relay.iface.liveness.room  # type: ignore[attr-defined]
            assert room is not None and room.workers == 1

            # The consumer's channel homed on the interface: the worker's app sends to it and
            # puts it in a group; the interface pops it and leaves the group at the end.
            inbox = f"specific.fleet{relay.channels['interface'].rsplit('!', 1)[-1]}!"
            app = RedisClusterChannelLayer(hosts=acl_redis.urls("worker"))
            homes = RedisClusterChannelLayer(hosts=acl_redis.urls("interface"))
            layers += [app, homes]
            await app.group_add("room", inbox + "c1")
            await app.group_send("room", {"type": "chat.message"})
            taken_all = await asyncio.wait_for(homes.receive_all(inbox), 5)
            assert [names for names, _ in taken_all] == [[inbox + "c1"]]
            await homes.group_discard("room", inbox + "c1")

            # The queue metrics: the exporter's, and each interface's and worker's /metrics.
            for role in ("exporter", "interface", "worker"):
                collector = QueueCollector(acl_redis.urls(role),
                                           metrics=FleetMetrics(registry=CollectorRegistry()))
                try:
                    readings = await asyncio.to_thread(collector.read)
                finally:
                    collector.close()
                assert collector.last_error is None, role
                assert [(r.queue, r.depth) for r in readings] == [("fleet.connect", 0)], role
            # The chart's wait-for-redis init container, in the interface and worker pods.
            for role in ("interface", "worker"):
                assert await asyncio.to_thread(redis_wait.check, acl_redis.urls(role)[0]) is None
            fleet = await asyncio.to_thread(fleet_status, acl_redis.urls("exporter"))
            assert [(p["kind"], p["name"]) for p in fleet["processes"]] == [
                ("interface", "i1"), ("worker", "w1")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.usefixtures("no_refusals")
async def test_a_peer_declared_dead_and_reviving__tombstones_with_the_documented_users(
        acl_redis: AclRedis) -> None:
    """DECLARE (interface and worker) and REVIVE (worker): the relay's two EVAL scripts."""
    from channels_fleet.layers.clients import redis_client
    from channels_fleet.relay.peer_watch import PeerWatch

    channel = f"fleet.worker.t!{time.time_ns()}"
    lost: list[bool] = []
    beat = Heartbeat(acl_redis.urls("worker"), channel, interval=5, ttl=10, prefix="fleet",
                     registry=wire.workers_key("fleet"), on_lost=lambda: lost.append(True))
    await beat.start()
    client = await redis_client(acl_redis.urls("interface"))
    try:
        with acl_redis.admin(acl_redis.ports[0]) as admin:
            admin.delete(wire.heartbeat_key(channel, "fleet"))  # as if it had lapsed
        watch = PeerWatch(client, lambda: [channel], lambda dead: None, prefix="fleet")
        assert await watch.missing([channel]) == [channel]
        assert await watch.declare([channel]) == {channel}
        await asyncio.to_thread(beat.beat)  # finds itself declared dead
        await asyncio.sleep(0.1)
        assert lost == [True]
        # A worker declares a dead interface the same way.
        gone = f"fleet.iface.t!{time.time_ns()}"
        as_worker = await redis_client(acl_redis.urls("worker"))
        try:
            watch = PeerWatch(as_worker, lambda: [gone], lambda dead: None, prefix="fleet")
            assert await watch.declare(await watch.missing([gone])) == {gone}
        finally:
            await as_worker.aclose()
    finally:
        await beat.stop()
        await client.aclose()


async def test_session_registry__the_worker_writes_it_the_interface_only_reads_it(
        acl_redis: AclRedis, layers: list[RedisClusterChannelLayer]) -> None:
    """relay/sessions.py as each role: the worker puts, gets and deletes an entry; an interface
    (where a client resumes) gets it and is refused SET and DEL (its pattern is ``%R~``)."""
    from channels_fleet.relay.session_items import session_key
    from channels_fleet.relay.sessions import SessionEntry, SessionRegistry

    worker_layer = relay_layer(settings(WorkerSettings, acl_redis, "worker", "w1", app="x:app"))
    iface_layer = relay_layer(settings(InterfaceSettings, acl_redis, "interface", "i1"))
    layers += [worker_layer, iface_layer]
    as_worker = SessionRegistry(worker_layer, "fleet")
    as_iface = SessionRegistry(iface_layer, "fleet")
    entry = SessionEntry("fleet.worker.w!1", "3f2a.1c:2", "fleet.iface.i!1")
    ids = [f"{n:032x}" for n in range(1, 7)]  # several slots on a cluster
    acl_redis.refusals()
    for session_id in ids:
        await as_worker.put(session_id, entry, ttl=30.0)
        assert await as_worker.get(session_id) == entry
        assert await as_iface.get(session_id) == entry
    await as_worker.put(ids[0], entry._replace(iface=""), ttl=30.0)  # a detach's re-put
    assert await as_iface.get(ids[0]) == entry._replace(iface="")
    for session_id in ids:
        await as_worker.delete(session_id)
        assert await as_iface.get(session_id) is None
    assert acl_redis.refusals() == set()
    # The interface never writes an entry: the key pattern is read-only for it.
    with pytest.raises(RedisPermissionError, match=r"refused SET on key fleet:session:\{"):
        await as_iface.put(ids[0], entry, ttl=30.0)
    with pytest.raises(RedisPermissionError, match=r"refused DEL on key fleet:session:\{"):
        await as_iface.delete(ids[0])
    key = session_key(ids[0], "fleet")
    assert acl_redis.refusals() == {("fleet-interface", key)}
    assert await as_worker.get(ids[0]) is None


def without(role: str, rule: str) -> list[str]:
    rules = documented_lines()[role]
    assert rule in rules, f"{rule} is not in the {role} line"
    return with_password([r for r in rules if r != rule])


async def test_missing_rule__layer__one_error_line_naming_the_command(
        acl_redis: AclRedis, layers: list[RedisClusterChannelLayer],
        caplog: pytest.LogCaptureFixture) -> None:
    acl_redis.set_user("fleet-broken", without("web", "+rpush"))
    layer = RedisClusterChannelLayer(hosts=[acl_redis.url("fleet-broken")])
    layers.append(layer)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            with pytest.raises(RedisPermissionError, match=r"EVALSHA send \(calls .*RPUSH"):
                await layer.send("chat.jobs", {"n": 1})
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "fleet-broken" in errors[0] and "asgi:q:{chat.jobs}" in errors[0]


async def test_missing_rule__a_key_pattern__names_the_key(
        acl_redis: AclRedis, layers: list[RedisClusterChannelLayer]) -> None:
    acl_redis.set_user("fleet-broken", without("worker", "~asgi:*"))
    layer = RedisClusterChannelLayer(hosts=[acl_redis.url("fleet-broken")])
    layers.append(layer)
    with pytest.raises(RedisPermissionError, match=r"BLMPOP on key asgi:q:\{chat\.jobs\}"):
        await asyncio.wait_for(layer.receive("chat.jobs"), 10)


async def test_missing_rule__relay_receive__one_error_line_while_it_retries(
        acl_redis: AclRedis, layers: list[RedisClusterChannelLayer],
        caplog: pytest.LogCaptureFixture) -> None:
    from channels_fleet.relay.relay import Relay

    acl_redis.set_user("fleet-broken", without("worker", "+blmpop"))
    broken = settings(WorkerSettings, acl_redis, "worker", "w1", app="unused:app",
                      redis_url=(acl_redis.url("fleet-broken"),))
    layer = relay_layer(broken)
    layers.append(layer)
    relay = Relay(layer, wire.WORKER_CHANNELS)
    with caplog.at_level(logging.INFO):
        channel = await relay.start()
        try:
            await asyncio.sleep(1.5)  # three retries or more
        finally:
            await relay.stop()
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1, logged
    assert "refused BLMPOP on key fleet:q:{" + channel.split("!")[0] + "!}" in logged[0]


async def test_missing_rule__heartbeat__the_process_does_not_start_and_says_why(
        acl_redis: AclRedis) -> None:
    acl_redis.set_user("fleet-broken", without("interface", "+set"))
    beat = Heartbeat([acl_redis.url("fleet-broken")], "fleet.iface.t!x", prefix="fleet")
    with pytest.raises(RedisPermissionError, match=r"refused SET on key fleet:hb:\{hb\}:"):
        await beat.start()
    beat._client.close()


def test_missing_rule__exporter__one_warning_naming_the_commands(
        acl_redis: AclRedis, caplog: pytest.LogCaptureFixture) -> None:
    acl_redis.set_user("fleet-broken", without("exporter", "+lindex"))
    collector = QueueCollector([acl_redis.url("fleet-broken")],
                               metrics=FleetMetrics(registry=CollectorRegistry()))
    try:
        with caplog.at_level(logging.WARNING):
            assert collector.read() == [] and collector.read() == []
    finally:
        collector.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "LLEN and LINDEX on key fleet:q:{fleet.connect}" in warnings[0]


def test_missing_rule__fleet_status__raises_naming_the_command(acl_redis: AclRedis) -> None:
    # It lists the heartbeat keys with SCAN on a single Redis, by slot on a cluster.
    rule, command = ("+cluster|getkeysinslot", "CLUSTER GETKEYSINSLOT") if acl_redis.is_cluster \
        else ("+scan", "SCAN")
    acl_redis.set_user("fleet-broken", without("exporter", rule))
    with pytest.raises(RedisPermissionError, match=f"refused {command} to user 'fleet-broken'"):
        fleet_status([acl_redis.url("fleet-broken")])


async def test_missing_rule__cluster_slots__the_layer_says_so_at_once(
        acl_redis: AclRedis, layers: list[RedisClusterChannelLayer]) -> None:
    if not acl_redis.is_cluster:
        pytest.skip("a single Redis has no slot table to read")
    acl_redis.set_user("fleet-broken", without("web", "+cluster|slots"))
    layer = RedisClusterChannelLayer(hosts=[acl_redis.url("fleet-broken")])
    layers.append(layer)
    with pytest.raises(RedisPermissionError, match=r"refused CLUSTER SLOTS to user"):
        await layer.send("chat.jobs", {"n": 1})


async def test_adopting_a_dead_home__the_worker_does_each_command__the_interface_is_refused(
        acl_redis: AclRedis, layers: list[RedisClusterChannelLayer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """worker/adopter.py as the worker user, the real code on the real Redis: two workers record
    their sessions homed on a dead interface (HSET, PEXPIRE), compete for the lock (SET NX PX),
    the holder keeps it (EVAL: GET, PEXPIRE), pops the home's LIST and reads the hash (HGETALL),
    the fields go (HDEL), the hash found empty (HLEN) it lets go (EVAL: GET, DEL). The
    interface user may touch neither key."""
    from channels_fleet.layers.homing import HomedChannel
    from channels_fleet.relay.side import TaskSet
    from channels_fleet.worker import adopter as adopter_module
    from channels_fleet.worker.adopter import HomeAdopter, adopt_key, home_key
    from channels_fleet.worker.owned import RUNNING

    for name, value in (("ADOPT_TTL", 0.6), ("IDLE_STOP", 0.3), ("REREAD", 0.05)):
        monkeypatch.setattr(adopter_module, name, value)
    home = "fleet.iface.gone!7"
    inbox = "specific.fleet7!"
    worker_settings = settings(WorkerSettings, acl_redis, "worker", "w1", app="x:app")
    relay = relay_layer(worker_settings)
    app = RedisClusterChannelLayer(hosts=acl_redis.urls("worker"))
    iface_relay = relay_layer(settings(InterfaceSettings, acl_redis, "interface", "i1"))
    layers += [relay, app, iface_relay]

    class Side:  # what the adopter uses of a RelaySide
        def __init__(self, channel: str) -> None:
            self.layer, self.channel, self.tasks = relay, channel, TaskSet()
            self.draining = False
            self.posts: list[tuple[str, Any]] = []
            self.relay = self

        def post(self, dest: str, item: Any, *, control: bool = False) -> bool:
            self.posts.append((dest, item))
            return True

    class Session:  # a live session homed on ``home`` (worker/session.py's fields it reads)
        def __init__(self, conn: str) -> None:
            self.home, self.home_claim, self.ended = home, f"{conn}~1", None
            self.homed = HomedChannel(inbox + conn, lambda layer: True)
            self.homed.take(app)
            self.session, self.state, self.got = self, RUNNING, []

        def deliver(self, event: dict[str, Any]) -> None:
            self.got.append(event["body"])

    sides = [Side("fleet.worker.w!1"), Side("fleet.worker.w!2")]
    sessions = [Session("c1"), Session("c2")]
    adopters = [HomeAdopter(side, worker_settings, sessions=lambda s=s: [s])  # type: ignore[arg-type]
                for side, s in zip(sides, sessions, strict=True)]
    acl_redis.refusals()
    for adopter in adopters:
        adopter.homes_dead({home})
        await asyncio.sleep(0.05)
    await app.group_add("room", inbox + "c1")
    await app.group_add("room", inbox + "c2")
    await app.group_send("room", {"type": "chat.message", "text": "hi"})
    deadline = time.monotonic() + 5
    while not (sessions[0].got or sessions[1].got) or not (sides[0].posts or sides[1].posts):
        assert time.monotonic() < deadline, "nothing adopted"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the holder refreshes its lock
    for adopter, session in zip(adopters, sessions, strict=True):
        adopter.forget(session)  # type: ignore[arg-type]
    while any(a.homes for a in adopters):
        assert time.monotonic() < deadline + 5, "the holder did not let go"
        await asyncio.sleep(0.05)
    assert await relay.command(adopt_key(home, "fleet"), "EXISTS",
                               adopt_key(home, "fleet")) == 0
    assert {e for e in acl_redis.refusals() if e[1] not in EXPECTED_REFUSALS} == set()
    # The interface: neither the hash nor the lock.
    key, lock = home_key(home, "fleet"), adopt_key(home, "fleet")
    with pytest.raises(RedisPermissionError, match=r"refused HSET"):
        await iface_relay.command(key, "HSET", key, "f", "v")
    with pytest.raises(RedisPermissionError, match=r"refused SET on key fleet:adopt:\{"):
        await iface_relay.command(lock, "SET", lock, "x", "NX", "PX", 1000)
    assert {e for e in acl_redis.refusals() if e[1] not in EXPECTED_REFUSALS} == {
        ("fleet-interface", "hset"), ("fleet-interface", lock)}
    await app.group_discard("room", inbox + "c1")
    await app.group_discard("room", inbox + "c2")
