"""The channel layer contract (channels' spec, channels_redis's behaviour) on single and Cluster."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
import redis
from channels.exceptions import ChannelFull
from cryptography.fernet import InvalidToken
from prometheus_client import REGISTRY

from channels_fleet.layers import RedisClusterChannelLayer, resp
from channels_fleet.layers.keys import channel_key, slot_of

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True, params=["hiredis", "python"] if resp.hiredis else ["python"])
def resp_codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The whole contract with hiredis's encoder and parser, and with the pure-Python ones
    (where the wheel is absent)."""
    if request.param == "python":
        monkeypatch.setattr(resp, "hiredis", None)
    return str(request.param)


async def no_message(layer, channel, wait=0.3):
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(channel), wait)


def raw_client(redis_hosts):
    """A plain redis-py client for looking at the keys, as an outside tool (KEDA) would."""
    if len(redis_hosts) > 1:
        return redis.RedisCluster.from_url(redis_hosts[0])
    return redis.Redis.from_url(redis_hosts[0])


async def test_send_receive(layer):
    await layer.send("test-channel-1", {"type": "test.message", "text": "Ahoy-hoy!"})
    assert await layer.receive("test-channel-1") == {"type": "test.message", "text": "Ahoy-hoy!"}


async def test_send_receive__order_is_kept(layer):
    for i in range(40):
        await layer.send("ordered", {"type": "m", "i": i})
    assert [(await layer.receive("ordered"))["i"] for _ in range(40)] == list(range(40))


async def test_send_receive__concurrent_sends_keep_per_channel_order(layer):
    async def produce(channel):
        for i in range(30):
            await layer.send(channel, {"i": i})

    channels = [f"conc.{n}" for n in range(8)]
    await asyncio.gather(*(produce(c) for c in channels))
    for channel in channels:
        assert [(await layer.receive(channel))["i"] for _ in range(30)] == list(range(30))


async def test_receive__waits_for_a_later_send(layer):
    receiver = asyncio.ensure_future(layer.receive("later"))
    await asyncio.sleep(0.1)
    assert not receiver.done()
    await layer.send("later", {"n": 1})
    assert await asyncio.wait_for(receiver, 5) == {"n": 1}


async def test_new_channel__process_local_name(layer):
    name = await layer.new_channel()
    assert re.fullmatch(r"specific\.[0-9a-f]{32}![0-9a-f]{32}", name)
    assert (await layer.new_channel("w")).startswith(f"w.{layer.client_prefix}!")


async def test_process_local__many_receivers_on_one_prefix(layer):
    channels = [await layer.new_channel() for _ in range(60)]
    receivers = [asyncio.ensure_future(layer.receive(c)) for c in channels]
    await asyncio.sleep(0.05)
    for i, channel in enumerate(reversed(channels)):
        await layer.send(channel, {"for": channel, "i": i})
    results = await asyncio.wait_for(asyncio.gather(*receivers), 10)
    assert [r["for"] for r in results] == channels


async def test_process_local__message_before_receive_is_buffered(layer):
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.send(first, {"n": 1})
    await layer.send(second, {"n": 2})
    assert await layer.receive(second) == {"n": 2}
    assert await layer.receive(first) == {"n": 1}


async def test_receive_cancel__loses_no_message(layer):
    for channel in ["cancel.shared", await layer.new_channel()]:
        receiver = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.05)
        receiver.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiver
        await layer.send(channel, {"after": "cancel"})
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"after": "cancel"}


async def test_receive_cancel__racing_a_send_loses_no_message(layer):
    """Cancel receivers at every moment around a send: every message still arrives once."""
    for channel in ["race.shared", await layer.new_channel()]:
        sent = 30
        for i in range(sent):
            receiver = asyncio.ensure_future(layer.receive(channel))
            await asyncio.sleep(0)
            await layer.send(channel, {"i": i})
            for _ in range(i % 4):
                await asyncio.sleep(0)
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            if not receiver.cancelled():
                await layer.send(channel, receiver.result())  # delivered: put it back in line
        got = set()
        while True:
            try:
                got.add((await asyncio.wait_for(layer.receive(channel), 1.0))["i"])
            except TimeoutError:
                break
        assert got == set(range(sent))


async def test_message_expiry(make_layer):
    layer = make_layer(expiry=1)
    await layer.send("expiring", {"n": 1})
    await asyncio.sleep(1.3)
    await layer.send("expiring", {"n": 2})
    assert await layer.receive("expiring") == {"n": 2}
    await no_message(layer, "expiring")


async def test_message_expiry__process_local_buffer_is_swept(make_layer):
    layer = make_layer(expiry=1)
    reader, unread = await layer.new_channel(), await layer.new_channel()
    await layer.send(unread, {"n": "never read"})
    await layer.send(reader, {"n": 1})
    assert await layer.receive(reader) == {"n": 1}
    assert layer.local_stats()["buffered"] == 1
    await asyncio.sleep(3.5)  # expiry + the sweep that follows it (expiry + 1 s after)
    assert layer.local_stats()["buffered"] == 0
    assert layer.local_stats()["expired"] == 1
    await no_message(layer, unread)


async def test_group_expiry(make_layer):
    layer = make_layer(group_expiry=1)
    await layer.group_add("old-group", "member.one")
    await asyncio.sleep(1.3)
    await layer.group_add("old-group", "member.two")
    await layer.group_send("old-group", {"n": 1})
    assert await layer.receive("member.two") == {"n": 1}
    await no_message(layer, "member.one")


def channel_full_count(operation):
    sample = REGISTRY.get_sample_value(
        "channels_fleet_channel_full_total", {"operation": operation}
    )
    return sample or 0


async def test_capacity__channel_full(make_layer):
    layer = make_layer(capacity=3)
    for i in range(3):
        await layer.send("full", {"i": i})
    before = channel_full_count("send")
    with pytest.raises(ChannelFull):
        await layer.send("full", {"i": 3})
    assert channel_full_count("send") == before + 1
    assert (await layer.receive("full"))["i"] == 0
    await layer.send("full", {"i": 4})  # room again after one receive


async def test_capacity__concurrent_sends_never_exceed_it(make_layer):
    layer = make_layer(capacity=10)
    results = await asyncio.gather(
        *(layer.send("burst", {"i": i}) for i in range(25)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 10
    assert all(isinstance(r, ChannelFull) for r in results if r is not None)


async def test_capacity__expired_messages_make_room(make_layer):
    layer = make_layer(capacity=2, expiry=1)
    await layer.send("stale", {"i": 0})
    await layer.send("stale", {"i": 1})
    await asyncio.sleep(1.2)
    await layer.send("stale", {"i": 2})
    assert await layer.receive("stale") == {"i": 2}


async def test_channel_capacity__glob_and_regex_patterns(make_layer):
    layer = make_layer(
        capacity=100, channel_capacity={"tiny.*": 1, re.compile(r"^two\..*"): 2}
    )
    assert layer.get_capacity("tiny.a") == 1
    assert layer.get_capacity("two.a") == 2
    assert layer.get_capacity("other") == 100
    await layer.send("tiny.a", {})
    with pytest.raises(ChannelFull):
        await layer.send("tiny.a", {})
    await layer.send("two.a", {})
    await layer.send("two.a", {})
    with pytest.raises(ChannelFull):
        await layer.send("two.a", {})


async def test_groups__add_send_discard(layer):
    local = await layer.new_channel()
    await layer.group_add("room", "member.a")
    await layer.group_add("room", local)
    await layer.group_send("room", {"text": "hi"})
    assert await layer.receive("member.a") == {"text": "hi"}
    assert await layer.receive(local) == {"text": "hi"}
    await layer.group_discard("room", "member.a")
    await layer.group_discard("room", "member.never-added")
    await layer.group_send("room", {"text": "again"})
    assert await layer.receive(local) == {"text": "again"}
    await no_message(layer, "member.a")


async def test_group_send__members_spread_over_many_slots(layer):
    named = [f"spread.{i}" for i in range(150)]
    local = [await layer.new_channel() for _ in range(50)]
    assert len({slot_of(channel_key(layer.prefix, c)) for c in named}) > 100
    for channel in named + local:
        await layer.group_add("big", channel)
    receivers = [asyncio.ensure_future(layer.receive(c)) for c in local]
    await layer.group_send("big", {"to": "all"})
    for channel in named:
        assert await layer.receive(channel) == {"to": "all"}
    assert await asyncio.wait_for(asyncio.gather(*receivers), 5) == [{"to": "all"}] * 50


async def test_group_send__full_members_are_skipped_not_raised(make_layer):
    layer = make_layer(capacity=1)
    await layer.group_add("g", "busy.one")
    await layer.group_add("g", "free.one")
    await layer.send("busy.one", {"n": 0})
    before = channel_full_count("group_send")
    await layer.group_send("g", {"n": 1})  # must not raise ChannelFull
    assert channel_full_count("group_send") == before + 1
    assert await layer.receive("free.one") == {"n": 1}
    assert await layer.receive("busy.one") == {"n": 0}
    await no_message(layer, "busy.one")


async def test_group_send__a_process_inbox_has_room_for_each_member_it_carries(make_layer):
    # Every process-local channel of a process shares one LIST: a worker's consumers. Direct
    # sends fill it to the capacity while the process is busy; a group message for 3 of its
    # channels still goes in (room: capacity per member), for each of them.
    layer = make_layer(capacity=2)
    a, b, c = [await layer.new_channel() for _ in range(3)]
    for channel in (a, b, c):
        await layer.group_add("inbox", channel)
    await layer.send(a, {"n": "direct a"})
    await layer.send(b, {"n": "direct b"})
    with pytest.raises(ChannelFull):
        await layer.send(c, {"n": "direct c"})  # the inbox holds 2: a direct send is refused
    before = channel_full_count("group_send")
    await layer.group_send("inbox", {"n": "group"})
    assert channel_full_count("group_send") == before
    assert [await layer.receive(a), await layer.receive(a)] == [{"n": "direct a"}, {"n": "group"}]
    assert [await layer.receive(b), await layer.receive(b)] == [{"n": "direct b"}, {"n": "group"}]
    assert await layer.receive(c) == {"n": "group"}


async def test_group_send__coalesced_elements_keep_their_own_room(make_layer):
    # Two group messages for one inbox leave in one flush: a room of 1 member (room 2, the
    # inbox holds 2: refused) and a room of 3 (room 6: taken). One capacity for the whole
    # flush (the first element's) refused both.
    layer = make_layer(capacity=2)
    a, b, c = [await layer.new_channel() for _ in range(3)]
    await layer.group_add("one", a)
    for channel in (a, b, c):
        await layer.group_add("three", channel)
    await layer.send(a, {"n": "direct a"})
    await layer.send(b, {"n": "direct b"})
    await asyncio.gather(layer.group_send("one", {"n": "one"}),
                         layer.group_send("three", {"n": "three"}))
    assert await layer.receive(c) == {"n": "three"}
    assert [await layer.receive(b), await layer.receive(b)] == [{"n": "direct b"}, {"n": "three"}]


async def test_flush__removes_messages_and_groups(layer):
    await layer.send("flushed", {"n": 1})
    await layer.group_add("flushed-group", "flushed.member")
    await layer.flush()
    await layer.group_send("flushed-group", {"n": 2})
    await no_message(layer, "flushed")
    await no_message(layer, "flushed.member")


async def test_invalid_names__type_error(layer):
    with pytest.raises(TypeError):
        await layer.send("bad name!", {})
    with pytest.raises(TypeError):
        await layer.group_add("bad group!", "ok")
    with pytest.raises(TypeError):
        await layer.send("x" * 120, {})
    with pytest.raises(AssertionError):
        await layer.send("ok", "not a dict")
    for _ in range(2):  # names checked once are remembered; bad ones never are
        with pytest.raises(TypeError, match="Channel name must be"):
            await layer.send("bad name!", {})
        with pytest.raises(TypeError, match="Channel name must be"):
            await layer.send(["not", "a", "name"], {})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Channel name must be"):
            await layer.receive("bad name!")


async def test_encryption__payload_is_encrypted_at_rest(make_layer, redis_hosts):
    layer = make_layer(symmetric_encryption_keys=["secret-key"])
    await layer.send("secret", {"text": "plain words"})
    raw = raw_client(redis_hosts)
    try:
        stored = raw.lrange(channel_key(layer.prefix, "secret"), 0, -1)
    finally:
        raw.close()
    assert len(stored) == 1 and b"plain words" not in stored[0]
    assert await layer.receive("secret") == {"text": "plain words"}


async def test_encryption__other_key_cannot_read(make_layer):
    writer = make_layer(symmetric_encryption_keys=["key-one"])
    reader = make_layer(symmetric_encryption_keys=["key-two"])
    await writer.send("locked", {"n": 1})
    with pytest.raises(InvalidToken):
        await reader.receive("locked")


async def test_keys__channel_list_is_readable_with_llen(layer, redis_hosts):
    """The shared work queue is a plain LIST an autoscaler can LLEN (docs/layer.md)."""
    for i in range(3):
        await layer.send("fleet.connect", {"i": i})
    raw = raw_client(redis_hosts)
    try:
        assert raw.llen(f"{layer.prefix}:q:{{fleet.connect}}") == 3
        assert raw.ttl(f"{layer.prefix}:q:{{fleet.connect}}") > 0
    finally:
        raw.close()


async def test_shared_channel__processes_share_the_queue_without_duplicates(make_layer):
    one, two = make_layer(), make_layer()
    total = 60
    got: list[int] = []

    async def consume(layer, stop):
        while not stop.is_set():
            try:
                got.append((await asyncio.wait_for(layer.receive("work"), 0.5))["i"])
            except TimeoutError:
                pass

    stop = asyncio.Event()
    consumers = [asyncio.ensure_future(consume(layer, stop)) for layer in (one, two, one)]
    for i in range(total):
        await one.send("work", {"i": i})
    deadline = time.monotonic() + 10
    while len(got) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*consumers)
    assert sorted(got) == list(range(total))


async def test_shared_channel__prefetched_messages_return_to_the_queue(make_layer):
    greedy, other = make_layer(receive_prefetch=10), make_layer()
    for i in range(8):
        await greedy.send("prefetch", {"i": i})
    assert (await greedy.receive("prefetch"))["i"] == 0  # pulled up to 11 messages
    # greedy stops reading: after a short linger the rest go back for other processes
    rest = [(await asyncio.wait_for(other.receive("prefetch"), 3))["i"] for _ in range(7)]
    assert rest == list(range(1, 8))


async def test_shared_channel__no_prefetch_takes_only_what_receivers_wait_for(
    make_layer, redis_hosts
):
    layer = make_layer(receive_prefetch=0)
    for i in range(5):
        await layer.send("strict", {"i": i})
    assert (await layer.receive("strict"))["i"] == 0
    await asyncio.sleep(0.05)  # well inside the prefetch linger: nothing was taken ahead
    raw = raw_client(redis_hosts)
    try:
        assert raw.llen(channel_key(layer.prefix, "strict")) == 4
    finally:
        raw.close()
    assert (await layer.receive("strict"))["i"] == 1


def test_multiple_event_loops__one_layer_used_from_sequential_loops(redis_hosts):
    layer = RedisClusterChannelLayer(hosts=redis_hosts)

    async def round_trip(n):
        await layer.send("loops", {"n": n})
        return await layer.receive("loops")

    def run_in_new_loop(coroutine):
        # Not asyncio.run: that would reset the current loop pytest-asyncio set up.
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(coroutine)
        finally:
            loop.close()  # the layer closes this loop's connections with it

    assert run_in_new_loop(round_trip(1)) == {"n": 1}
    assert run_in_new_loop(round_trip(2)) == {"n": 2}
    run_in_new_loop(layer.flush())
    assert not layer._states


@pytest.mark.slow
@pytest.mark.timeout(40)
async def test_idle_receive__outlives_redis_py_default_socket_timeout(make_layer):
    """redis-py 8 times reads out after 5 s; an idle receive must wait as long as it takes."""
    layer = make_layer()
    receiver = asyncio.ensure_future(layer.receive("idle"))
    local = await layer.new_channel()
    local_receiver = asyncio.ensure_future(layer.receive(local))
    await asyncio.sleep(6.5)
    assert not receiver.done() and not local_receiver.done()
    await layer.send("idle", {"woke": True})
    await layer.send(local, {"woke": True})
    assert await asyncio.wait_for(receiver, 5) == {"woke": True}
    assert await asyncio.wait_for(local_receiver, 5) == {"woke": True}
