"""Relay message formats: scopes survive msgpack, bodies split under the chunk limit."""

from __future__ import annotations

import msgpack
import pytest

from channels_fleet.relay import session_items, wire

SCOPE = {
    "type": "websocket",
    "path": "/ws/chat/lobby/",
    "raw_path": b"/ws/chat/lobby/",
    "query_string": b"a=1",
    "headers": [(b"host", b"example.com"), (b"cookie", b"sessionid=abc")],
    "client": ("10.0.0.1", 51000),
    "server": ("10.0.0.2", 8000),
    "scheme": "ws",
    "subprotocols": ["chat.v2"],
    "root_path": "",
    "asgi": {"version": "3.0"},
    "state": object(),  # not serialisable: must not travel
}


def roundtrip(message: dict) -> dict:
    return msgpack.unpackb(msgpack.packb(message, use_bin_type=True), raw=False)


def test_scope_round_trip__headers_back_to_tuples_of_bytes() -> None:
    envelope = roundtrip(wire.connect_envelope("fleet.iface.x!y", "c1", SCOPE, 5.0))
    scope = wire.scope_from_wire(envelope)
    assert scope["headers"] == [(b"host", b"example.com"), (b"cookie", b"sessionid=abc")]
    assert scope["client"] == ["10.0.0.1", 51000]  # lists, as Daphne gives them
    assert scope["server"] == ["10.0.0.2", 8000]
    assert scope["subprotocols"] == ["chat.v2"]
    assert scope["path"] == "/ws/chat/lobby/"
    assert scope["query_string"] == b"a=1"
    assert scope["asgi"]["version"] == "3.0"
    assert "state" not in scope


def test_connect_envelope__carries_deadline_and_reply_address() -> None:
    envelope = wire.connect_envelope("fleet.iface.x!y", "c1", SCOPE, 5.0)
    assert envelope["type"] == "fleet.connect"
    assert (envelope["iface"], envelope["conn"]) == ("fleet.iface.x!y", "c1")
    assert abs(envelope["deadline"] - envelope["sent_at"] - 5.0) < 1e-6


def test_connect_envelope__asks_for_acks_only_when_told() -> None:
    assert "ack" not in wire.connect_envelope("fleet.iface.x!y", "c1", SCOPE, 5.0)
    envelope = roundtrip(wire.connect_envelope("fleet.iface.x!y", "c1", SCOPE, 5.0, ack=True))
    assert wire.parse_envelope(envelope)["ack"] is True
    envelope["ack"] = 1
    with pytest.raises(wire.WireError, match="ack"):
        wire.parse_envelope(envelope)


def test_claim_id__names_the_connection_and_the_claim() -> None:
    claim = wire.claim_id("3f9a0c.1b", 2)
    assert claim == "3f9a0c.1b~2" and claim != wire.claim_id("3f9a0c.1b", 1)
    assert wire.claimed_conn(claim) == "3f9a0c.1b"
    assert wire.claimed_conn("no claim number") == ""  # matches no connection


def test_scope_from_wire__missing_client_stays_none() -> None:
    scope = wire.scope_from_wire({"scope": {"type": "http", "path": "/", "client": None}})
    assert scope["client"] is None
    assert scope["headers"] == []
    assert scope["root_path"] == ""


def test_split_body__small_message_untouched() -> None:
    message = {"type": "http.request", "body": b"abc", "more_body": False}
    assert list(wire.split_body(message, 10)) == [message]


def test_split_body__big_body_in_order_with_more_body_flags() -> None:
    body = bytes(range(256)) * 40  # 10,240 bytes
    parts = list(wire.split_body({"type": "http.request", "body": body, "more_body": False},
                                 4096))
    assert [len(p["body"]) for p in parts] == [4096, 4096, 2048]
    assert [p["more_body"] for p in parts] == [True, True, False]
    assert b"".join(p["body"] for p in parts) == body


def test_split_body__keeps_more_body_of_a_streamed_message() -> None:
    parts = list(wire.split_body({"type": "http.response.body", "body": b"x" * 10,
                                  "more_body": True}, 4))
    assert all(p["more_body"] for p in parts)


def test_item_size__counts_body_bytes() -> None:
    assert wire.item_size([wire.SEND, "c", {"type": "websocket.send", "text": "x" * 1000}]) > 1000
    assert wire.item_size([wire.CLAIM, "c", "fleet.worker.a!b"]) < 100


def test_parse_message__body_and_claims() -> None:
    assert wire.parse_message([b"body", ["c1.1", "c2.3"]]) == (b"body", ["c1.1", "c2.3"])


@pytest.mark.parametrize("payload", [
    ["not bytes", ["c1.1"]], [b"body", "c1.1"], [b"body", [1]], [b"body"],
])
def test_parse_message__anything_else_is_a_wire_error(payload: list) -> None:
    with pytest.raises(wire.WireError, match="msg item"):
        wire.parse_message(payload)


def test_parse_kept__prefix_and_groups() -> None:
    assert wire.parse_kept(["chat", ["room-1", "room-2"]]) == ("chat", ["room-1", "room-2"])


@pytest.mark.parametrize("payload", [
    [b"chat", ["room"]], ["chat", "room"], ["chat", [None]], ["chat"], [],
])
def test_parse_kept__anything_else_is_a_wire_error(payload: list) -> None:
    with pytest.raises(wire.WireError, match="kept item"):
        wire.parse_kept(payload)


SESSION_ID = "9f0c" * 8


def test_connect_envelope__carries_a_resumable_sockets_session() -> None:
    mark = session_items.session_mark(SESSION_ID, seq=12, ack=7)
    envelope = roundtrip(wire.connect_envelope("fleet.iface.x!y", "c1", SCOPE, 5.0, ack=True,
                                               session=mark))
    assert wire.parse_envelope(envelope)["session"] == {"id": SESSION_ID, "seq": 12, "ack": 7}
    assert "session" not in wire.connect_envelope("fleet.iface.x!y", "c1", SCOPE, 5.0)


@pytest.mark.parametrize("session", [
    None, "9f0c", {"id": "9F0C" * 8, "seq": 0, "ack": 0}, {"id": SESSION_ID, "seq": -1, "ack": 0},
    {"id": SESSION_ID, "seq": 0}, {"id": SESSION_ID, "seq": True, "ack": 0},
    {"id": SESSION_ID, "seq": 0, "ack": 2**53},
])
def test_parse_envelope__a_bad_session_is_a_wire_error(session: object) -> None:
    envelope = roundtrip(wire.connect_envelope("fleet.iface.x!y", "c1", SCOPE, 5.0))
    envelope["session"] = session
    with pytest.raises(wire.WireError, match="session"):
        wire.parse_envelope(envelope)


@pytest.mark.parametrize("item", [
    [session_items.DETACH, "c1~1", 1006], [session_items.CLIENT_ACK, "c1~1", 4],
    [session_items.RESUME, "c2~1", [SESSION_ID, 3, ""]], [session_items.RESUMED, "c2~1", [2, "", "", "", ""]],
    [session_items.NO_SESSION, "c2~1", "unknown"], [session_items.SUPERSEDE, "c1~1", 4001],
    [session_items.SESSION_END, "c1~1", [1000, ""]], [session_items.OUTBOX, "c1~1", [0, 0, []]],
])
def test_parse_item__knows_the_session_items(item: list) -> None:
    assert wire.parse_item(item) is item


@pytest.mark.parametrize("item", [
    [session_items.DETACH, "c1~1", "1006"], [session_items.DETACH, "c1~1", True],
    [session_items.RESUME, "c2~1", {"type": "x"}], [session_items.NO_SESSION, "c2~1", 1],
])
def test_parse_item__a_session_item_of_the_wrong_payload_type_is_a_wire_error(
        item: list) -> None:
    with pytest.raises(wire.WireError, match="bad payload"):
        wire.parse_item(item)
