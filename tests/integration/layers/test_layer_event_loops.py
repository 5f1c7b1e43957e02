"""One layer used from several event loops, as ``async_to_sync`` from plain sync code does.

Each ``async_to_sync`` call from a thread without a running loop runs on a new loop (closed
after it); threads run such loops side by side. channels_redis documents and tests this
(``test_double_receive``); it refuses two loops receiving at once, we serve both.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync

from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.layers.connection import Router
from channels_fleet.layers.executor import Executor
from channels_fleet.layers.hosts import decode_hosts
from channels_fleet.layers.keys import channel_key, pack_element
from channels_fleet.layers.sender import Sender

pytestmark = pytest.mark.timeout(60)


def run_like_asyncio_run(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, Any]):
    """``asyncio.run`` on a given loop: run, cancel what is left, close."""
    try:
        return loop.run_until_complete(coroutine)
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.close()


def in_thread(target: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``target`` in a thread; the returned join() gives its result or raises its error."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:  # re-raised in join()
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join(timeout: float = 30) -> Any:
        thread.join(timeout)
        assert not thread.is_alive(), f"{target} still running after {timeout}s"
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    return join


def client_counts(redis_hosts: list[str]) -> dict[str, int]:
    """Normal client connections on every node, other than the one asking."""
    first = redis.Redis.from_url(redis_hosts[0])
    try:
        if len(redis_hosts) > 1:
            nodes = [address.split("@")[0] for address in first.execute_command("CLUSTER NODES")]
        else:
            kwargs = first.connection_pool.connection_kwargs
            nodes = [f"{kwargs['host']}:{kwargs['port']}"]
    finally:
        first.close()
    counts = {}
    for node in nodes:
        host, _, port = node.rpartition(":")
        client = redis.Redis(host=host, port=int(port))
        try:
            counts[node] = len(client.client_list(_type="normal")) - 1
        finally:
            client.close()
    return counts


@pytest.fixture
def sync_layer(redis_hosts: list[str]):
    """A layer for sync tests; flushed (on a loop of its own) afterwards."""
    layer = RedisClusterChannelLayer(hosts=redis_hosts, capacity=1000, expiry=30)
    yield layer
    async_to_sync(layer.flush)()
    assert not layer._states, "a closed loop left its connections open"


def test_process_local__received_in_a_later_async_to_sync_call(sync_layer):
    """channels_redis's test_double_receive: created, sent, received in separate calls."""
    layer = sync_layer

    async def send_and_close(channel, message):
        await layer.send(channel, message)
        await layer.close_pools()

    first = async_to_sync(layer.new_channel)()
    second = async_to_sync(layer.new_channel)()
    async_to_sync(send_and_close)(first, {"type": "test.message.1"})
    async_to_sync(send_and_close)(second, {"type": "test.message.2"})

    async def receive_and_close(channel):
        try:
            return await asyncio.wait_for(layer.receive(channel), 10)
        finally:
            await layer.close_pools()

    # The first call pops both messages; the second is kept for the next call's loop.
    assert async_to_sync(receive_and_close)(second) == {"type": "test.message.2"}
    assert async_to_sync(receive_and_close)(first) == {"type": "test.message.1"}


def test_process_local__each_message_in_its_own_async_to_sync_call(sync_layer):
    layer = sync_layer
    channels = [async_to_sync(layer.new_channel)() for _ in range(3)]
    for i in range(20):
        for channel in channels:
            async_to_sync(layer.send)(channel, {"i": i})
    receive = async_to_sync(layer.receive)
    for channel in reversed(channels):
        assert [receive(channel)["i"] for _ in range(20)] == list(range(20))


def test_process_local__two_loops_receive_at_once(sync_layer):
    """Two threads, each with its own loop, receive on one prefix's LIST at the same time."""
    layer = sync_layer
    count = 300
    first, second = (async_to_sync(layer.new_channel)() for _ in range(2))

    def receive_all(channel):
        async def receive():
            return [(await asyncio.wait_for(layer.receive(channel), 10))["i"]
                    for _ in range(count)]

        return lambda: async_to_sync(receive)()

    joins = [in_thread(receive_all(first)), in_thread(receive_all(second))]
    time.sleep(0.2)  # both loops are waiting before the first message

    async def send_all():
        for i in range(count):
            await layer.send(first, {"i": i})
            await layer.send(second, {"i": i})
            if i % 10 == 0:
                await asyncio.sleep(0.001)  # let the receiving loops pop in between

    async_to_sync(send_all)()
    assert [join() for join in joins] == [list(range(count)), list(range(count))]


def test_process_local__loops_closing_mid_receive_lose_nothing(sync_layer):
    """One thread receives in short async_to_sync calls that time out and close their loop
    (often while a pop is in flight) while another thread receives on the same LIST: every
    message reaches its receiver once, in order."""
    layer = sync_layer
    count = 150
    churning, steady = (async_to_sync(layer.new_channel)() for _ in range(2))

    async def receive_briefly():
        try:
            return (await asyncio.wait_for(layer.receive(churning), 0.02))["i"]
        except TimeoutError:
            return None

    def churn():
        got: list[int] = []
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            i = async_to_sync(receive_briefly)()
            if i is not None:
                got.append(i)
        return got

    async def receive_steadily():
        return [(await asyncio.wait_for(layer.receive(steady), 10))["i"] for _ in range(count)]

    joins = [in_thread(churn), in_thread(lambda: async_to_sync(receive_steadily)())]

    async def send_all():
        for i in range(count):
            await layer.send(churning, {"i": i})
            await layer.send(steady, {"i": i})
            await asyncio.sleep(0.003)

    async_to_sync(send_all)()
    assert [join(45) for join in joins] == [list(range(count)), list(range(count))]


async def nothing():
    pass


@pytest.mark.parametrize("shared", [False, True], ids=["process_local", "shared"])
def test_loop_closing__a_message_its_blocked_pop_took_is_kept(sync_layer, shared):
    """A loop's BLMPOP takes a message, then the loop closes before reading the reply (as
    asyncio.run does): the message reaches the next receive instead of being lost."""
    layer = sync_layer
    channel = "loops.shared" if shared else async_to_sync(layer.new_channel)()
    loop = asyncio.new_event_loop()
    gave_up = loop.create_task(layer.receive(channel))
    loop.run_until_complete(asyncio.sleep(0.3))  # its BLMPOP is blocked in Redis now
    gave_up.cancel()
    loop.run_until_complete(asyncio.gather(gave_up, return_exceptions=True))
    # The BLMPOP is still blocked (it outlives the receive). Send from another thread while
    # this loop does not run: the BLMPOP takes the message, its reply waits in the socket.
    async_to_sync(layer.send)(channel, {"kept": True})
    time.sleep(0.05)
    run_like_asyncio_run(loop, nothing())  # cancels the pull loop, closes the loop
    assert not asyncio.all_tasks(loop)

    async def receive_again():
        return await asyncio.wait_for(layer.receive(channel), 5)

    assert async_to_sync(receive_again)() == {"kept": True}


def test_loop_closing__a_message_its_last_quick_pop_took_is_kept(redis_hosts):
    """After serving a receive, the pull loop pops once more without blocking; the loop
    stops before reading that reply and closes: what it took reaches the next receive."""
    layer = RedisClusterChannelLayer(hosts=redis_hosts, receive_batch=1)
    served, next_one = (async_to_sync(layer.new_channel)() for _ in range(2))
    async_to_sync(layer.send)(served, {"n": 1})
    async_to_sync(layer.send)(next_one, {"n": 2})
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(layer.receive(served)) == {"n": 1}
    time.sleep(0.05)  # the LPOP left as the loop stopped; its reply waits in the socket
    run_like_asyncio_run(loop, nothing())

    async def receive_and_flush():
        try:
            return await asyncio.wait_for(layer.receive(next_one), 5)
        finally:
            await layer.flush()

    assert async_to_sync(receive_and_flush)() == {"n": 2}


def node_of(redis_hosts: list[str], key: str) -> redis.Redis:
    """A plain client of the node holding ``key`` (for CLIENT PAUSE there)."""
    raw = redis.Redis.from_url(redis_hosts[0])
    if not raw.info("cluster").get("cluster_enabled"):
        return raw
    raw.close()
    cluster = redis.RedisCluster.from_url(redis_hosts[0])
    node = cluster.get_node_from_key(key)
    cluster.close()
    return redis.Redis(host=node.host, port=node.port)


async def test_quick_pop_given_up_in_flight__what_it_took_goes_to_salvage(redis_hosts):
    """The sender's side of the above: the reply comes after the pop was cancelled."""
    router = Router(decode_hosts(redis_hosts))
    await router.connect()
    sender = Sender(Executor(router, 5), 60_000)
    key = channel_key("salvage", "x")
    elements = [pack_element(int(time.time() * 1000) + 60_000, "x", b"%d" % i) for i in range(2)]
    raw = node_of(redis_hosts, key)
    try:
        raw.rpush(key, *elements)
        raw.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # holds the LPOP's reply
        salvaged: list[tuple[str, list[bytes]]] = []
        pop = sender.pop(key, 10, lambda k, got: salvaged.append((k, got)))
        await asyncio.sleep(0.05)  # the LPOP has left
        pop.cancel()
        await sender.settle()
        assert salvaged == [(key, elements)]
    finally:
        raw.execute_command("CLIENT", "UNPAUSE")
        raw.delete(key)
        raw.close()
        await sender.close()
        await router.close()


async def test_an_inbox_pop_given_up_in_flight__what_it_took_goes_back_to_the_list(
        make_layer, redis_hosts):
    """An interface that stops popping its homed channels (a drain) cancels a pop whose reply
    is on its way: that message goes back to the LIST, for the worker adopting it, not to
    this process's mailbox, which nobody reads (one room message to every session homed there
    was lost so)."""
    inbox = "specific.fleetdraining!"
    home, adopter = make_layer(prefix="giveback"), make_layer(prefix="giveback")
    await home.send(inbox + "c1", {"type": "m", "n": 1})
    key = channel_key("giveback", inbox)
    raw = node_of(redis_hosts, key)
    try:
        raw.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # holds the pop's reply
        pop = asyncio.create_task(home.receive_all(inbox, True))
        await asyncio.sleep(0.05)  # the pop has left
        pop.cancel()
        await home.close_pools()  # the interface's exit
    finally:
        raw.execute_command("CLIENT", "UNPAUSE")
        raw.close()
    taken = await adopter.receive_all(inbox, True)
    assert [(names, adopter.decode(body)) for names, body in taken] == [
        ([inbox + "c1"], {"type": "m", "n": 1})]


def test_loop_closing__leaves_no_task_and_no_connection(sync_layer, redis_hosts):
    layer = sync_layer
    channel = async_to_sync(layer.new_channel)()
    before = client_counts(redis_hosts)
    for i in range(8):
        async_to_sync(layer.send)(channel, {"i": i})
        async_to_sync(layer.send)("loops.shared", {"i": i})
        loop = asyncio.new_event_loop()
        # Plain run_until_complete then close: the pull loops may still be popping.
        assert loop.run_until_complete(layer.receive(channel)) == {"i": i}
        assert loop.run_until_complete(layer.receive("loops.shared")) == {"i": i}
        loop.close()
        assert not asyncio.all_tasks(loop), "a closed loop left a task behind"
    assert not layer._states
    deadline = time.monotonic() + 5
    while client_counts(redis_hosts) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client_counts(redis_hosts) == before


def test_loop_closing__a_blocked_receive_is_unblocked_not_waited_out(sync_layer):
    """Closing a loop whose receive waits in BLMPOP takes well under the block time (2 s)."""
    layer = sync_layer
    channel = async_to_sync(layer.new_channel)()
    loop = asyncio.new_event_loop()
    loop.create_task(layer.receive(channel))
    loop.create_task(layer.receive("loops.blocked-shared"))
    loop.run_until_complete(asyncio.sleep(0.3))
    start = time.monotonic()
    run_like_asyncio_run(loop, nothing())
    assert time.monotonic() - start < 1.0


async def test_receive__foreign_client_prefix_is_refused_at_once(make_layer):
    layer, other = make_layer(), make_layer()
    foreign = await other.new_channel()
    for channel in ["not-client-prefix!local_part", foreign, f"specific.{other.client_prefix}!x"]:
        await layer.send(channel, {"n": 0})  # sending to it is fine, and checks nothing twice
        with pytest.raises(AssertionError, match="Wrong client prefix"):
            await asyncio.wait_for(layer.receive(channel), 1)
        with pytest.raises(AssertionError, match="Wrong client prefix"):
            layer.receive_key(channel)
        with pytest.raises(AssertionError, match="Wrong client prefix"):  # every time
            layer.receive_key(channel)
    # Its own names and shared names are still fine.
    own = await layer.new_channel("w")
    await layer.send(own, {"n": 1})
    assert await layer.receive(own) == {"n": 1}


def test_receive__foreign_client_prefix_is_refused_through_async_to_sync(sync_layer):
    start = time.monotonic()
    with pytest.raises(AssertionError, match="Wrong client prefix"):
        async_to_sync(sync_layer.receive)("not-client-prefix!local_part")
    assert time.monotonic() - start < 1.0
