"""A homed channel (layers/homing.py): the name an app instance's first new_channel() returns,
received by another process (the interface), never by the layer's own receive; its group
memberships kept while its socket moves."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable

import pytest

from channels_fleet.layers import RedisClusterChannelLayer
from channels_fleet.layers.homing import HOMED, HomedChannel
from channels_fleet.layers.clients import sync_client
from channels_fleet.layers.keys import HOMED_SHARE, group_key

NAME = "specific.fleettoken!c1.1"


def in_instance(homed: HomedChannel, coro_fn, *args):  # type: ignore[no-untyped-def]
    """Run ``coro_fn(*args)`` as a task whose context has ``homed``, as an app instance does."""
    context = contextvars.copy_context()
    context.run(HOMED.set, homed)
    return asyncio.get_running_loop().create_task(coro_fn(*args), context=context)


async def test_first_new_channel_of_an_instance_is_the_homed_name_once(
    layer: RedisClusterChannelLayer,
) -> None:
    accepted: list[object] = []
    homed = HomedChannel(NAME, accept=lambda lay: accepted.append(lay) or True)

    async def two_names() -> tuple[str, str]:
        return await layer.new_channel(), await layer.new_channel()

    first, second = await in_instance(homed, two_names)
    assert first == NAME and second != NAME and second.startswith("specific.")
    assert accepted == [layer] and homed.layer is layer
    assert await layer.new_channel() != NAME  # outside the instance: a name of its own


async def test_a_layer_refused_by_the_worker_gives_its_own_name(
    layer: RedisClusterChannelLayer,
) -> None:
    homed = HomedChannel(NAME, accept=lambda lay: False)
    name = await in_instance(homed, layer.new_channel)
    assert name != NAME and homed.layer is None


async def test_messages_to_the_homed_name_wait_in_the_interfaces_list_not_here(
    make_layer: Callable[..., RedisClusterChannelLayer],
) -> None:
    """The instance's receive never takes them; the interface pops them raw from its LIST."""
    worker = make_layer(prefix="homing")
    interface = make_layer(prefix="homing")  # another process's layer on the same prefix
    homed = HomedChannel(NAME, accept=lambda lay: True)

    async def consumer() -> dict[str, object]:
        name = await worker.new_channel()
        return await worker.receive(name)

    receiving = in_instance(homed, consumer)
    await worker.send(NAME, {"type": "room.message", "text": "hi"})
    ((names, body),) = await asyncio.wait_for(interface.receive_all("specific.fleettoken!"), 5)
    assert names == [NAME]
    assert worker.decode(body) == {"type": "room.message", "text": "hi"}
    await asyncio.sleep(0.2)
    assert not receiving.done()  # the layer's own receive of a homed name waits for ever
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving


async def test_group_discard_of_a_moving_socket_is_skipped(layer: RedisClusterChannelLayer) -> None:
    homed = HomedChannel(NAME, accept=lambda lay: True)

    async def join_then_leave(moving: bool) -> None:
        name = await layer.new_channel() if homed.layer is None else NAME
        await layer.group_add("room", name)
        homed.moving = moving
        await layer.group_discard("room", name)

    await in_instance(homed, join_then_leave, True)
    assert await _members(layer, "room") == [NAME]  # still in the group for the next instance
    await in_instance(homed, join_then_leave, False)
    assert await _members(layer, "room") == []  # a socket that ends leaves as usual


async def _members(layer: RedisClusterChannelLayer, group: str) -> list[str]:
    """The group's members, read from its ZSET."""
    urls = [url for url, _ in layer.hosts]
    client = sync_client(urls[0], cluster=len(urls) > 1)
    try:
        names = await asyncio.to_thread(client.zrange, group_key(layer.prefix, group), 0, -1)
    finally:
        client.close()
    return sorted(n.decode() for n in names)


async def test_a_dead_home_s_list_holds_every_homed_session_s_messages_beyond_capacity(
    make_layer: Callable[..., RedisClusterChannelLayer],
) -> None:
    """A homed LIST is its interface's inbox, shared by its sessions; while nobody pops it
    (its interface dead, not adopted yet) group messages to them all wait: HOMED_SHARE times a
    channel's room. Another process's local LIST keeps the channel's capacity."""
    sender = make_layer(prefix="homecap", capacity=3)
    receiver = make_layer(prefix="homecap", capacity=3)
    homed = [f"specific.fleetdead!c{n}.1" for n in range(5)]
    local = await receiver.new_channel()
    for group, name in enumerate([*homed, local]):
        await sender.group_add(f"g{group}", name)
    for n in range(4):
        for group in range(len(homed) + 1):
            await sender.group_send(f"g{group}", {"type": "m", "n": n})
    taken = await receiver.receive_all("specific.fleetdead!", True)
    assert sorted(names[0] for names, _ in taken) == sorted(homed * 4)
    assert sender.get_capacity(homed[0]) == 3 * HOMED_SHARE
    assert [(await receiver.receive(local))["n"] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(receiver.receive(local), 0.5)
