"""The buffer of unacknowledged client frames: bounds, acknowledgements, what a replay holds."""

from __future__ import annotations

from channels_fleet.interface.replay import REPLAYED, Unacked


def frame(text: str) -> dict:
    return {"type": "websocket.receive", "text": text}


def texts(frames: list[dict]) -> list[str]:
    return [f["text"] for f in frames]


def test_ack__drops_the_handled_frames_only() -> None:
    unacked = Unacked(limit=10, max_bytes=1000)
    for n in range(4):
        unacked.record(frame(str(n)))
    unacked.ack(handled=2, taken=3)
    assert texts(unacked.frames) == ["2", "3"]
    assert unacked.size == 2
    unacked.ack(handled=1, taken=1)  # an older ACK (reordered): changes nothing
    assert texts(unacked.frames) == ["2", "3"]


def test_detach__marks_the_frames_and_counts_those_the_app_had_taken() -> None:
    unacked = Unacked(limit=10, max_bytes=1000)
    for n in range(4):
        unacked.record(frame(str(n)))
    unacked.ack(handled=1, taken=2)  # frame 1 was being handled when the owner died
    replay = unacked.detach("dead")
    assert texts(replay.frames) == ["1", "2", "3"]
    assert all(f[REPLAYED] is True for f in replay.frames)
    assert (replay.lost, replay.duplicates, replay.cause) == (0, 1, "dead")
    assert REPLAYED not in unacked.frames[0] if unacked.frames else True
    # The buffer starts afresh for the next owner, which numbers frames from 0 again.
    assert (len(unacked), unacked.first, unacked.acked, unacked.taken, unacked.size) == (
        0, 0, 0, 0, 0)


def test_count_bound__the_oldest_go_and_a_replay_would_have_a_hole() -> None:
    unacked = Unacked(limit=2, max_bytes=1000)
    for n in range(3):
        unacked.record(frame(str(n)))
    assert texts(unacked.frames) == ["1", "2"]
    assert unacked.lost == 1
    assert unacked.detach("dead").lost == 1


def test_byte_bound__counts_payload_bytes() -> None:
    unacked = Unacked(limit=100, max_bytes=10)
    unacked.record({"type": "websocket.receive", "bytes": b"x" * 6})
    unacked.record({"type": "websocket.receive", "bytes": b"y" * 6})
    assert len(unacked) == 1 and unacked.size == 6 and unacked.lost == 1
    unacked.record({"type": "websocket.receive", "text": "z" * 11})  # alone over the bound
    assert len(unacked) == 0 and unacked.size == 0 and unacked.lost == 3


def test_overflow_heals__once_the_owner_acknowledges_past_the_dropped_frames() -> None:
    unacked = Unacked(limit=2, max_bytes=1000)
    for n in range(3):
        unacked.record(frame(str(n)))
    unacked.ack(handled=1, taken=1)  # the dropped frame 0 is handled after all
    assert unacked.lost == 0
    replay = unacked.detach("dead")
    assert texts(replay.frames) == ["1", "2"] and replay.lost == 0


def test_unfinished__after_a_drain_only_the_frames_taken_and_not_handled() -> None:
    unacked = Unacked(limit=10, max_bytes=1000)
    for n in range(4):
        unacked.record(frame(str(n)))
    unacked.ack(handled=1, taken=2)  # frame 1 still being handled when the owner let go
    unfinished = unacked.detach("drain").unfinished()
    assert unfinished is not None
    assert texts(unfinished.frames) == ["1"]  # 2 and 3 come back with the RETURN
    assert (unfinished.lost, unfinished.duplicates) == (0, 1)


def test_unfinished__none_when_the_app_was_idle_a_hole_when_the_frame_was_dropped() -> None:
    idle = Unacked(limit=10, max_bytes=1000)
    idle.record(frame("0"))
    idle.ack(handled=1, taken=1)
    assert idle.detach("drain").unfinished() is None
    full = Unacked(limit=2, max_bytes=1000)
    full.ack(handled=0, taken=1)  # frame 0 taken, then dropped from the full buffer
    for n in range(3):
        full.record(frame(str(n)))
    unfinished = full.detach("drain").unfinished()
    assert unfinished is not None and unfinished.lost == 1  # refused 1012, not replayed
