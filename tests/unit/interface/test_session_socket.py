"""A socket's session at the interface (session.py): wrapping, and client_ack from ACK counts."""

from __future__ import annotations

from channels_fleet.interface.replay import Unacked
from channels_fleet.interface.session import SocketSession
from channels_fleet.relay.session_items import FLEET_SEQ
from channels_fleet.resume import envelope

SESSION_ID = "9f" * 16


def receive(seq: int) -> dict:
    return {"type": "websocket.receive", "text": f"c{seq}", FLEET_SEQ: seq}


def test_wrap__text_and_bytes_as_d_frames_with_the_current_ack() -> None:
    session = SocketSession(SESSION_ID, "t" * 24)
    session.client_ack = 4
    text = session.wrap({"type": "websocket.send", "text": "hi", FLEET_SEQ: 1})
    assert text == {"type": "websocket.send", "text": "D 1 4\nhi"}
    data = session.wrap({"type": "websocket.send", "bytes": b"\x00\x01", FLEET_SEQ: 2})
    assert data == {"type": "websocket.send", "bytes": b"D 2 4\n\x00\x01"}
    assert (session.seq, session.told) == (2, 4)
    assert session.mark() == {"id": SESSION_ID, "seq": 2, "ack": 4}
    assert "t" * 24 not in repr(session)  # the token is a credential


def test_took__the_seq_of_the_last_client_frame_taken_channel_messages_skipped() -> None:
    session = SocketSession(SESSION_ID, "t" * 24)
    unacked = Unacked(limit=100, max_bytes=1 << 20)
    for event in (receive(1), {"type": "fleet.message", "body": b"m"}, receive(2), receive(3)):
        unacked.record(event)
    assert not session.took("c~1", unacked, 0)
    assert session.took("c~1", unacked, 2) and session.client_ack == 1  # c1 and the message
    unacked.ack(2, 2)
    assert session.took("c~1", unacked, 3) and session.client_ack == 2
    assert not session.took("c~1", unacked, 3)
    # A new claim (re-homed) counts its own frames from 0; client_ack never goes back.
    fresh = Unacked(limit=100, max_bytes=1 << 20)
    fresh.record(receive(3))
    fresh.record(receive(4))
    assert session.took("c~2", fresh, 2) and session.client_ack == 4


def test_ack_due_after_ack_every_frames_untold() -> None:
    session = SocketSession(SESSION_ID, "t" * 24)
    session.client_ack = envelope.ACK_EVERY - 1
    assert not session.ack_due()
    session.client_ack += 1
    assert session.ack_due()
    session.resumed(40, "", "")
    assert (session.client_ack, session.told, session.resuming) == (40, 40, False)
    assert not session.ack_due()
    hello = envelope.parse(session.hello(True, None), from_server=True)
    assert hello == envelope.Hello("t" * 24, True, 40, None)
