"""A batch of commands on the layer's own connection: one write, one future, every reply in
its command's place (the sender's flushes ride on it)."""

from __future__ import annotations

import asyncio

import pytest
from redis import exceptions as rx

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.layers.resp import RespConnection


async def _open(redis_single: LocalRedis) -> RespConnection:
    return await RespConnection.open(f"127.0.0.1:{redis_single.nodes[0].port}", {}, 5.0)


@pytest.mark.timeout(20)
async def test_batch__replies_in_order_with_an_error_in_its_command_place(redis_single):
    conn = await _open(redis_single)
    try:
        replies = await conn.batch([
            ("SET", "batch:k", "v"),
            ("INCR", "batch:k"),  # not an integer: an error reply, in the middle
            ("GET", "batch:k"),
            ("DEL", "batch:k"),
        ])
        assert replies[0] == b"OK"
        assert isinstance(replies[1], rx.ResponseError)
        assert "not an integer" in str(replies[1])
        assert replies[2:] == [b"v", 1]
        assert await conn.batch([]) == []
        assert await conn.command("PING") == b"PONG"  # the stream is still in step
    finally:
        conn.close()


@pytest.mark.timeout(20)
async def test_batch__a_lost_connection_keeps_what_came_and_fails_the_rest(redis_single):
    conn = await _open(redis_single)
    try:
        # The first reply is in before the connection goes; the second never comes.
        replies = conn.batch([("SET", "batch:lost", "1"), ("BLPOP", "batch:empty", 0)])
        await asyncio.sleep(0.2)
        assert not replies.done()
        conn.close()
        first, second = await replies
        assert first == b"OK"
        assert isinstance(second, rx.ConnectionError)
        closed = await conn.batch([("PING",), ("PING",)])
        assert all(isinstance(reply, rx.ConnectionError) for reply in closed)
    finally:
        conn.close()
