"""The RESP encoder and incremental parser of the layer's own connection: the pure-Python
ones, and hiredis's where the wheel is installed (the same results either way)."""

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import exceptions as rx

from channels_fleet.layers import resp
from channels_fleet.layers.resp import INCOMPLETE, Parser, UnblockedError, pack, pack_python

PACKERS = [pytest.param(pack_python, id="python"), pytest.param(pack, id="default")]
PARSERS = [pytest.param(Parser, id="python")]
if resp.hiredis is not None:
    PARSERS.append(pytest.param(resp.new_parser, id="hiredis"))


@pytest.mark.parametrize("encode", PACKERS)
def test_pack__encodes_every_argument_type(encode):
    assert encode(("SET", b"k", 1, 1.5)) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$3\r\n1.5\r\n"
    )
    assert encode(("SET", "é", memoryview(b"ab"), bytearray(b"c"))) == (
        b"*4\r\n$3\r\nSET\r\n$2\r\n\xc3\xa9\r\n$2\r\nab\r\n$1\r\nc\r\n"
    )


def test_pack__the_c_and_python_encoders_agree_on_a_send():
    args = ("EVALSHA", "f" * 40, 1, "asgi:chat.1", 100, 60000, int(time.time() * 1000),
            time.time(), b"\x93\xa5hello")
    assert pack(args) == pack_python(args)


@pytest.mark.parametrize("encode", PACKERS)
@pytest.mark.parametrize("value", [None, True, object()])
def test_pack__refuses_what_redis_cannot_store(encode, value):
    with pytest.raises(rx.DataError, match=type(value).__name__):
        encode(("SET", "k", value))


def _encode(value):
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(_encode(v) for v in value)


REPLIES = st.recursive(
    st.none() | st.integers(-(2**40), 2**40) | st.binary(max_size=50),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@pytest.mark.parametrize("new_parser", PARSERS)
@given(replies=st.lists(REPLIES, min_size=1, max_size=5), cut=st.integers(1, 7))
def test_parser__any_split_of_the_stream_gives_the_same_replies(new_parser, replies, cut):
    stream = b"".join(_encode(r) for r in replies)
    parser = new_parser()
    got = []
    for start in range(0, len(stream), cut):
        parser.feed(stream[start : start + cut])
        while (reply := parser.gets()) is not INCOMPLETE:
            got.append(reply)
    assert got == replies


@pytest.mark.parametrize("new_parser", PARSERS)
def test_parser__cluster_errors_become_redis_py_exceptions(new_parser):
    parser = new_parser()
    parser.feed(b"-MOVED 3999 127.0.0.1:6381\r\n-NOSCRIPT No matching script\r\n+OK\r\n"
                b"*2\r\n:1\r\n-UNBLOCKED force unblock from blocking operation\r\n")
    moved = parser.gets()
    assert isinstance(moved, rx.MovedError)
    assert (moved.slot_id, moved.host, moved.port) == (3999, "127.0.0.1", 6381)
    assert isinstance(parser.gets(), rx.NoScriptError)
    assert parser.gets() == b"OK"
    one, unblocked = parser.gets()
    assert one == 1 and isinstance(unblocked, UnblockedError)
    assert parser.gets() is INCOMPLETE


@pytest.mark.parametrize("new_parser", PARSERS)
def test_parser__a_corrupt_stream_raises_invalid_response(new_parser):
    parser = new_parser()
    parser.feed(b"?what\r\n")
    with pytest.raises(rx.InvalidResponse):
        parser.gets()
