"""Property tests of the relay's decoding (wire.py): whatever comes off Redis, only WireError.

A message on ``fleet.connect`` or a process channel comes from anything holding the relay's Redis
credentials. Arbitrary msgpack-shaped values, raw bytes and mutated valid envelopes must either
parse into something the host and gateway can use without a KeyError/TypeError, or raise
:class:`channels_fleet.relay.wire.WireError`, nothing else.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels_fleet.relay import wire

SCOPE = {
    "type": "websocket", "path": "/ws/echo/a/", "raw_path": b"/ws/echo/a/",
    "query_string": b"x=1", "headers": [(b"host", b"h"), (b"origin", b"http://h")],
    "client": ("10.0.0.1", 5000), "server": ("10.0.0.2", 8000), "scheme": "ws",
    "subprotocols": ["chat"],
}

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.binary(max_size=20))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10) | st.sampled_from(
        ["type", "scope", "iface", "conn", "headers", "path", "items", "client"]), inner,
        max_size=5),
    max_leaves=20,
)


def valid_envelope() -> dict[str, Any]:
    envelope = wire.connect_envelope("fleet.iface.a!b", "c.1", SCOPE, 5)
    raw = msgpack.packb(envelope, use_bin_type=True)
    return msgpack.unpackb(raw, raw=False)


def decode(message: Any) -> None:
    """What the host does with a connect envelope, and the relay with a batch."""
    try:
        wire.scope_from_wire(wire.parse_envelope(message))
    except wire.WireError:
        pass
    try:
        for item in wire.parse_batch(message):
            try:
                kind, _, payload = wire.parse_item(item)
                if kind == wire.ACK:
                    wire.parse_acks(payload)
            except wire.WireError:
                pass
    except wire.WireError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(values)
def test_arbitrary_values__only_wire_error(message: Any) -> None:
    decode(message)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes__only_wire_error(data: bytes) -> None:
    decode(data)
    try:
        decoded = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # the layer's serializer refuses it before wire sees it
        return
    decode(decoded)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["type", "iface", "conn", "scope", "sent_at", "deadline", "ack"]),
       st.sampled_from(["type", "path", "headers", "client", "server", "query_string",
                        "raw_path", "subprotocols", "scheme", None]),
       values)
def test_mutated_envelopes__parse_or_wire_error(top: str, key: str | None, value: Any) -> None:
    envelope = valid_envelope()
    if key is None:
        envelope[top] = value
    else:
        envelope["scope"][key] = value
    try:
        scope = wire.scope_from_wire(wire.parse_envelope(envelope))
    except wire.WireError:
        return
    # What parse_envelope lets through is usable as an ASGI scope.
    assert scope["type"] in ("websocket", "http")
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in scope["headers"])
    assert isinstance(envelope["iface"], str) and isinstance(envelope["conn"], str)


@settings(max_examples=150, deadline=None)
@given(st.lists(values, max_size=4))
def test_arbitrary_items__parse_or_wire_error(items: list[Any]) -> None:
    for item in wire.parse_batch(wire.batch(items)):
        try:
            kind, conn, payload = wire.parse_item(item)
        except wire.WireError:
            continue
        assert isinstance(conn, str)
        if isinstance(payload, dict):
            assert isinstance(payload["type"], str)


@settings(max_examples=150, deadline=None)
@given(st.lists(values | st.tuples(st.text(max_size=5), st.integers(), st.integers()).map(list),
                max_size=4))
def test_arbitrary_acks__parse_or_wire_error(entries: list[Any]) -> None:
    try:
        parsed = wire.parse_acks(entries)
    except wire.WireError:
        return
    # What parse_acks lets through is what the gateway unpacks: (conn, handled, taken).
    for conn, handled, taken in parsed:
        assert isinstance(conn, str) and handled >= 0 and taken >= 0


def test_valid_messages_parse() -> None:
    assert wire.parse_envelope(valid_envelope())["conn"] == "c.1"
    assert wire.parse_item([wire.SEND, "c.1", {"type": "websocket.send", "text": "x"}])
    assert wire.parse_item([wire.END, "c.1", None])
    assert wire.parse_acks(wire.parse_item([wire.ACK, "", [["c.1", 2, 3]]])[2])
    for bad_acks in ([["c.1", -1, 0]], [["c.1", True, 0]], [["c.1", 1]], [[1, 1, 1]]):
        try:
            wire.parse_acks(bad_acks)
        except wire.WireError:
            continue
        raise AssertionError(f"{bad_acks!r} accepted")
    for bad in ([wire.GONE, "c.1", True], ["nope", "c", 1], [wire.SEND, 3, {"type": "x"}]):
        try:
            wire.parse_item(bad)
        except wire.WireError:
            continue
        raise AssertionError(f"{bad!r} accepted")
