"""The RESP encoder and incremental parser of the layer's own connection."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import exceptions as rx

from channels_fleet.layers.resp import Parser, _Incomplete, pack


def test_pack__encodes_every_argument_type():
    assert pack(("SET", b"k", 1, 1.5)) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$3\r\n1.5\r\n"


def test_pack__refuses_what_redis_cannot_store():
    with pytest.raises(rx.DataError):
        pack(("SET", "k", None))


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


@given(replies=st.lists(REPLIES, min_size=1, max_size=5), cut=st.integers(1, 7))
def test_parser__any_split_of_the_stream_gives_the_same_replies(replies, cut):
    stream = b"".join(_encode(r) for r in replies)
    parser = Parser()
    got = []
    for start in range(0, len(stream), cut):
        parser.feed(stream[start : start + cut])
        while True:
            try:
                got.append(parser.gets())
            except _Incomplete:
                break
    assert got == replies


def test_parser__cluster_errors_become_redis_py_exceptions():
    parser = Parser()
    parser.feed(b"-MOVED 3999 127.0.0.1:6381\r\n-NOSCRIPT No matching script\r\n+OK\r\n")
    moved = parser.gets()
    assert isinstance(moved, rx.MovedError)
    assert (moved.slot_id, moved.host, moved.port) == (3999, "127.0.0.1", 6381)
    assert isinstance(parser.gets(), rx.NoScriptError)
    assert parser.gets() == b"OK"
