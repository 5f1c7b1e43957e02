"""The relay items of resumable sessions: each payload checked, nothing malformed gets through."""

from __future__ import annotations

import msgpack
import pytest

from channels_fleet.relay import session_items as items
from channels_fleet.relay.wire import WireError
from channels_fleet.resume import envelope

SESSION_ID = "0123456789abcdef" * 2


def roundtrip(value: object) -> object:
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False)


def test_max_seq__is_the_protocols() -> None:
    assert items.MAX_SEQ == envelope.MAX_SEQ


def test_session_key__one_hash_tag_per_session() -> None:
    assert items.session_key(SESSION_ID, "fleet") == f"fleet:session:{{{SESSION_ID}}}"


def test_session_mark__survives_msgpack_and_its_check() -> None:
    mark = items.session_mark(SESSION_ID, 5, 2)
    assert items.parse_session(roundtrip(mark)) == {"id": SESSION_ID, "seq": 5, "ack": 2}
    assert items.session_mark(SESSION_ID) == {"id": SESSION_ID, "seq": 0, "ack": 0}


def test_session_mark__a_home_elsewhere_is_carried_and_checked() -> None:
    mark = items.session_mark(SESSION_ID, 5, 2, "fleet.i!A", "c1~1")
    assert mark == {"id": SESSION_ID, "seq": 5, "ack": 2, "home": "fleet.i!A",
                    "home_claim": "c1~1"}
    assert items.parse_session(mark) == mark
    for bad in ({"home": "fleet.i!A"}, {"home_claim": "c1~1"}, {"home": 1, "home_claim": "c"},
                {"home": "", "home_claim": "c1~1"}):
        with pytest.raises(WireError, match="home"):
            items.parse_session({"id": SESSION_ID, "seq": 0, "ack": 0, **bad})


def test_parse_seq__absent_is_none_present_is_checked() -> None:
    assert items.parse_seq({"type": "websocket.receive", "text": "hi"}) is None
    assert items.parse_seq({"type": "websocket.receive", "text": "hi", "fleet_seq": 3}) == 3


@pytest.mark.parametrize("seq", [0, -1, 2**53, True, "3", 1.0])
def test_parse_seq__anything_but_1_to_2_53_is_a_wire_error(seq: object) -> None:
    with pytest.raises(WireError, match="fleet_seq"):
        items.parse_seq({"type": "websocket.send", "fleet_seq": seq})


def test_parse_code__close_codes_only() -> None:
    assert items.parse_code(items.DETACH, 1006) == 1006
    assert items.parse_code(items.SUPERSEDE, 4001) == 4001
    for code in (999, 5000, -1):
        with pytest.raises(WireError, match="supersede item"):
            items.parse_code(items.SUPERSEDE, code)


def test_parse_client_ack__a_sequence_number() -> None:
    assert items.parse_client_ack(0) == 0
    with pytest.raises(WireError, match="cack item"):
        items.parse_client_ack(2**53)


def test_parse_resume__session_last_origin() -> None:
    payload = roundtrip([SESSION_ID, 7, "https://example.com"])
    assert items.parse_resume(payload) == (SESSION_ID, 7, "https://example.com")


@pytest.mark.parametrize("payload", [
    [SESSION_ID, 7], ["not-hex" * 5, 7, ""], [SESSION_ID, -1, ""], [SESSION_ID, 7, None],
    [SESSION_ID.encode(), 7, ""], [SESSION_ID, True, ""],
])
def test_parse_resume__anything_else_is_a_wire_error(payload: list) -> None:
    with pytest.raises(WireError, match="resume item"):
        items.parse_resume(payload)


def test_parse_resumed__ack_the_apps_subprotocol_and_the_home() -> None:
    assert items.parse_resumed([4, "chat.v2", "", "", ""]) == (4, "chat.v2", "", "", "")
    assert items.parse_resumed([0, "", "specific.fleetA!c1", "fleet.i!A", "c1~1"]) == (
        0, None, "specific.fleetA!c1", "fleet.i!A", "c1~1")


@pytest.mark.parametrize("payload", [[4], [4, None], [-1, ""], ["4", ""], [4, "", 1],
                                     [4, ""], [4, "", "", "", 1], [4, "", "ch", "", ""]])
def test_parse_resumed__anything_else_is_a_wire_error(payload: list) -> None:
    with pytest.raises(WireError, match="resumed item"):
        items.parse_resumed(payload)


def test_parse_no_session__known_reasons_only() -> None:
    for reason in items.NO_SESSION_REASONS:
        assert items.parse_no_session(reason) == reason
    with pytest.raises(WireError, match="no-session item"):
        items.parse_no_session("because")


def test_parse_session_end__the_apps_code_and_reason() -> None:
    assert items.parse_session_end([4000, "bye"]) == (4000, "bye")
    for payload in ([4000], [900, ""], [4000, None], [True, ""]):
        with pytest.raises(WireError, match="session-end item"):
            items.parse_session_end(payload)


def test_parse_outbox__frames_numbered_up_to_seq() -> None:
    frames = [[4, {"type": "websocket.send", "text": "a"}],
              [5, {"type": "websocket.send", "bytes": b"b"}]]
    seq, ack, parsed = items.parse_outbox(roundtrip([5, 9, frames]))
    assert (seq, ack) == (5, 9)
    assert parsed == [(4, frames[0][1]), (5, frames[1][1])]
    assert items.parse_outbox([0, 0, []]) == (0, 0, [])


@pytest.mark.parametrize("payload", [
    [5, 9], [5, 9, {}], [-1, 0, []],
    [5, 9, [[3, {"type": "websocket.send"}], [5, {"type": "websocket.send"}]]],  # a hole
    [5, 9, [[4, {"type": "websocket.send"}]]],  # does not end at seq
    [5, 9, [[5, {"text": "no type"}]]], [5, 9, [[5, "text"]]], [5, 9, [5]],
    [0, 0, [[0, {"type": "websocket.send"}]]],  # seq 0 is no frame
])
def test_parse_outbox__anything_else_is_a_wire_error(payload: list) -> None:
    with pytest.raises(WireError, match="outbox item"):
        items.parse_outbox(payload)
