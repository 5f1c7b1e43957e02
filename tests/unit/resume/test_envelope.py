"""The resume protocol's codec (docs/resume-protocol.md): every kind both ways, offers, errors."""

from __future__ import annotations

import json

import pytest

from channels_fleet.resume import envelope
from channels_fleet.resume.envelope import (
    Ack,
    Back,
    Data,
    End,
    Hello,
    ProtocolError,
    encode_ack,
    encode_data,
    encode_hello,
    offer,
    parse,
    parse_offer,
)

TOKEN = "q8Zk3vJ0bW1yR2tLx9aP-_"


def hello(**fields: object) -> str:
    """An H message: a valid new session's hello with ``fields`` changed."""
    body = {"v": 1, "session": TOKEN, "resumed": False, "ack": 0, "protocol": None, **fields}
    return "H\n" + json.dumps(body)


@pytest.mark.parametrize("payload", ["hello", "", "two\nlines", "ünï", b"\x00\n\xff", b""])
def test_data_round_trip__text_and_binary_keep_their_type(payload: str | bytes) -> None:
    wire = encode_data(7, 3, payload)
    assert type(wire) is type(payload)
    assert parse(wire, from_server=False) == Data(7, 3, payload)


def test_data_header__is_the_documented_ascii() -> None:
    assert encode_data(1, 0, "x") == "D 1 0\nx"
    assert encode_data(12, 5, b"\x01") == b"D 12 5\n\x01"


def test_control_messages__parse_from_a_server() -> None:
    assert parse(encode_ack(9), from_server=True) == Ack(9)
    assert parse("B\n", from_server=True) == Back()
    assert parse(b"X\n", from_server=True) == End()
    hello = Hello(TOKEN, True, 4, "chat.v2")
    assert parse(encode_hello(hello), from_server=True) == hello
    assert parse(encode_hello(Hello(TOKEN, False, 0, None)), from_server=True).protocol is None


def test_hello__unknown_fields_are_ignored() -> None:
    assert parse(hello(later=1), from_server=True) == Hello(TOKEN, False, 0, None)


@pytest.mark.parametrize("message", ["H\n{}", "B\n", "X\n"])
def test_server_kinds__from_a_client_are_protocol_errors(message: str) -> None:
    with pytest.raises(ProtocolError, match="only a server sends"):
        parse(message, from_server=False)


@pytest.mark.parametrize(("message", "cause"), [
    ("hello", "no header"),
    ("D 1 0", "no header"),
    ("D" + " " * 70 + "\n", "no header"),
    ("Q 1\n", "unknown message kind"),
    ("d 1 0\nx", "unknown message kind"),
    ("D 1\nx", "malformed 'D'"),
    ("D 1 0 0\nx", "malformed 'D'"),
    ("D  1 0\nx", "malformed .D."),
    ("D 01 0\nx", "bad seq"),
    ("D -1 0\nx", "bad seq"),
    ("D 1 +0\nx", "bad ack"),
    ("D ١ 0\nx", "not ASCII"),
    ("D 0 0\nx", "seq 0"),
    ("D 9007199254740992 0\n", "bad seq"),
    ("A 1\nx", "malformed 'A'"),
    ("A\n", "malformed 'A'"),
    ("B\nx", "with a payload"),
    ("X 1\n", "malformed 'X'"),
    ("H\nnot json", "not JSON"),
    ("H\n[]", "not a JSON object"),
    ('H\n{"v":2}', "version"),
    ('H\n{"v":true}', "version"),
    (hello(session="short"), "session"),
    (hello(session="a" * 15 + "!"), "session"),
    (hello(resumed=0), "resumed"),
    (hello(resumed=True, ack=-1), "ack"),
    (hello(ack=3), "new session acknowledges"),
    (hello(protocol=5), "protocol"),
])
def test_malformed__raises_protocol_error_naming_the_cause(message: str, cause: str) -> None:
    with pytest.raises(ProtocolError, match=cause):
        parse(message, from_server=True)


def test_malformed__binary_header_not_ascii() -> None:
    with pytest.raises(ProtocolError, match="not ASCII"):
        parse(b"D \xff 0\n", from_server=True)


def test_largest_numbers__fit_the_header_limit() -> None:
    top = envelope.MAX_SEQ
    assert parse(encode_data(top, top, "x"), from_server=True) == Data(top, top, "x")
    assert len(f"D {top} {top}\n") < envelope.MAX_HEADER


def test_offer__resume_first_then_session_then_the_apps() -> None:
    assert offer(["chat.v2", "chat.v1"]) == [envelope.SUBPROTOCOL, "chat.v2", "chat.v1"]
    assert offer(["chat.v2"], TOKEN, 12) == [
        envelope.SUBPROTOCOL, f"channels-fleet.session.{TOKEN}.12", "chat.v2"]


def test_offer__refuses_reserved_app_names_and_bad_sessions() -> None:
    with pytest.raises(ValueError, match="reserved"):
        offer(["channels-fleet.mine"])
    with pytest.raises(ValueError, match="cannot offer"):
        offer([], "bad token!", 0)


def test_parse_offer__round_trips_and_strips_every_reserved_name() -> None:
    offered = [*offer(["chat.v2"], TOKEN, 12), "channels-fleet.resume.v2"]
    assert parse_offer(offered) == envelope.Offer(True, TOKEN, 12, ("chat.v2",))


@pytest.mark.parametrize("offered", [
    [f"channels-fleet.session.{TOKEN}.1"],  # no resume entry
    [envelope.SUBPROTOCOL, f"channels-fleet.session.{TOKEN}.01"],
    [envelope.SUBPROTOCOL, f"channels-fleet.session.{TOKEN}"],
    [envelope.SUBPROTOCOL, "channels-fleet.session.short.1"],
    [envelope.SUBPROTOCOL, f"channels-fleet.session.{TOKEN}.1",
     f"channels-fleet.session.{TOKEN}.2"],
])
def test_parse_offer__a_bad_session_entry_means_a_new_session(offered: list[str]) -> None:
    assert parse_offer(offered).session is None


def test_new_token__is_a_valid_token_and_fresh() -> None:
    tokens = {envelope.new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(envelope.valid_token(t) for t in tokens)


def test_reconnect_delay__full_jitter_under_a_doubling_cap() -> None:
    for failures, ceiling in [(1, 0.25), (2, 0.5), (3, 1.0), (7, 10.0), (1000, 10.0)]:
        delays = [envelope.reconnect_delay(failures) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2


@pytest.mark.parametrize(("code", "ends"), [
    (1000, True), (1001, True), (3000, True), (4002, True), (4999, True),
    (None, False), (1002, False), (1006, False), (1011, False), (5000, False)])
def test_client_close_ends_session__only_codes_an_app_or_page_chooses(code: int | None,
                                                                     ends: bool) -> None:
    assert envelope.client_close_ends_session(code) is ends
